"""livegate on another WebSocket stack, to pick the stack with numbers (bench/README.md).

The same app and config as ``livegate serve`` (``LIVEGATE_*`` from the environment); only
uvicorn's WebSocket implementation differs::

    python bench/servers/livegate_alt.py --port P --ws wsproto|websockets|websockets-sansio
"""

from __future__ import annotations

import argparse

from livegate.app import Gateway, create_app
from livegate.config import Config
from livegate.server import GatewayServer, tune_gc, uvicorn_config

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ws", default="websockets-sansio")
    args = parser.parse_args()
    config = Config.from_env(host="127.0.0.1", port=args.port)
    gateway = Gateway(config)
    app = create_app(gateway=gateway)
    tune_gc()  # as livegate.server.serve does
    uv = uvicorn_config(config, app)
    uv.ws = args.ws  # read by uvicorn.Config.load() when the server starts
    GatewayServer(uv, gateway).run()
