"""livegate's app served by granian (Rust HTTP/WebSocket stack), for the stack comparison only.

    granian --interface asgi --loop uvloop --workers 1 bench.servers.livegate_granian:app

Graceful shutdown's flush-then-4000 is wired for uvicorn (livegate.server); this module only
measures delivery cost and memory.
"""

from __future__ import annotations

from livegate.app import Gateway, create_app
from livegate.config import Config
from livegate.server import tune_gc

app = create_app(gateway=Gateway(Config.from_env()))
tune_gc()
