"""server.py leans on uvicorn's sans-I/O WebSocket protocol internals (pinned to one minor in
pyproject.toml). These checks fail loudly on an upgrade that moves them, instead of letting
the fast send path or the per-connection memory savings quietly stop working."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import httpx
import websockets
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from livegate.app.ws import SEND_TEXT_EXTENSION
from livegate.server import HeartbeatClosingProtocol
from livegate.testing.gateway import running_gateway


def test_every_attribute_uvicorn_sets_per_connection_is_a_slot() -> None:
    source = inspect.getsource(WebSocketsSansIOProtocol)
    assigned = set(re.findall(r"self\.([a-z_]+)\s*(?::[^=\n]+)?=(?!=)", source))
    missing = assigned - set(HeartbeatClosingProtocol.__slots__)
    assert not missing, f"uvicorn sets attributes server.py does not slot: {sorted(missing)}"


def test_the_hooks_server_py_overrides_still_exist() -> None:
    for name in ("keepalive_timeout", "start_keepalive", "handle_connect", "send_keepalive_ping"):
        assert callable(getattr(WebSocketsSansIOProtocol, name, None)), name


async def test_connections_get_the_fast_send_extension_and_use_it(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw, websockets.connect(gw.ws_url, compression=None) as ws:
        await ws.send('{"type":"auth","token":"' + gw.token("alice") + '"}')
        assert '"welcome"' in await ws.recv()
        (connection,) = gw.gateway.connections
        assert connection.socket.scope["extensions"][SEND_TEXT_EXTENSION]["send"] is not None
        async with httpx.AsyncClient(base_url=gw.http_url) as client:
            await client.post("/v1/events", headers={"Authorization": f"Bearer {gw.gateway.config.service_token}"},
                              json={"events": [{"userId": "alice", "event": {
                                  "type": "notification", "level": "info", "message": "now"}}]})
        assert '"now"' in await ws.recv()
        # Written at once: no writer task was ever needed for this idle-then-live connection.
        assert connection._writer is None
