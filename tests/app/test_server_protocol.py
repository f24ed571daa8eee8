"""server.py leans on uvicorn's sans-I/O WebSocket protocol internals (pinned to one minor in
pyproject.toml). These checks fail loudly on an upgrade that moves them, instead of letting
the fast send path or the per-connection memory savings quietly stop working."""

from __future__ import annotations

import inspect
import json
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


async def test_the_writer_replays_through_the_synchronous_send_in_order(tmp_path: Path) -> None:
    # A resume replay goes through the writer (ws.py _write): at once while the transport takes
    # it, through ASGI send when it is paused; either way every offset once, in order.
    async with running_gateway(tmp_path) as gw:
        async with httpx.AsyncClient(base_url=gw.http_url) as client:
            for start in range(0, 300, 100):
                published = await client.post(
                    "/v1/events", headers={"Authorization": f"Bearer {gw.gateway.config.service_token}"},
                    json={"events": [{"userId": "alice", "event": {"type": "notification", "level": "info",
                                                                   "message": f"m{n}"}} for n in range(start, start + 100)]})
        epoch = published.json()["results"][0]["epoch"]
        async with websockets.connect(gw.ws_url, compression=None, max_queue=None) as ws:
            await ws.send(json.dumps({"type": "auth", "token": gw.token("alice"), "resume": {"epoch": epoch, "offset": 0}}))
            welcome = json.loads(await ws.recv())
            assert welcome["type"] == "welcome" and welcome["recovered"] is True
            replayed = [json.loads(await ws.recv()) for _ in range(300)]
            assert [(e["offset"], e["message"]) for e in replayed] == [(n + 1, f"m{n}") for n in range(300)]
            (connection,) = gw.gateway.connections
            assert connection._written_at_once > 0


async def test_the_handshake_parser_is_dropped_and_frames_still_parse(tmp_path: Path) -> None:
    from websockets.protocol import Protocol

    async with running_gateway(tmp_path) as gw, websockets.connect(gw.ws_url, compression=None) as ws:
        await ws.send('{"type":"auth","token":"' + gw.token("alice") + '"}')
        assert '"welcome"' in await ws.recv()
        (connection,) = gw.gateway.connections
        protocol = connection.socket.scope["extensions"][SEND_TEXT_EXTENSION]["send"].__self__
        assert protocol.conn.parser.gi_code is Protocol.parse.__code__  # the frame parser, driven directly
        # Frames with 7-bit and 16-bit lengths still parse, in order.
        for size in (10, 300, 60_000):
            await ws.send('{"type":"ping","id":"p' + str(size) + '"' + " " * size + "}")  # JSON whitespace
        answers = [json.loads(await ws.recv()) for _ in range(3)]
        assert [(a["type"], a["id"]) for a in answers] == [("pong", "p10"), ("pong", "p300"), ("pong", "p60000")]


def test_fast_path_frames_are_the_bytes_websockets_would_send() -> None:
    from websockets.frames import Frame, Opcode

    from livegate.server import unmasked_text_frame

    for text in ("", "a", "x" * 125, "x" * 126, "x" * 127, "é" * 63, "€" * 42, "x" * 65535, "x" * 65536,
                 '{"type":"notification","message":"' + "ü" * 40_000 + '"}'):
        payload = text.encode()
        assert unmasked_text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[]), \
            len(payload)


def test_every_recipient_of_an_event_gets_its_frame_and_the_next_event_a_new_one() -> None:
    # The frame of the last text is kept between calls (one encode per event, not per
    # recipient); a new text must never get the previous frame.
    from livegate.server import _LAST_FRAME, unmasked_text_frame

    first, second = '{"offset":1}', '{"offset":2}'
    tab, other_tab = _OpenProtocol(), _OpenProtocol()
    for protocol, text in ((tab, first), (other_tab, first), (tab, second), (other_tab, second), (tab, first)):
        assert HeartbeatClosingProtocol.send_text_now(protocol, text)  # type: ignore[arg-type]
        assert _LAST_FRAME.text is text
    assert tab.written == [unmasked_text_frame(t.encode()) for t in (first, second, first)]
    assert other_tab.written == [unmasked_text_frame(t.encode()) for t in (first, second)]


class _OpenProtocol:
    """What send_text_now reads of an open, writable connection without extensions; it is its
    own transport and keeps what was written."""

    def __init__(self) -> None:
        from websockets.protocol import State

        from livegate.server import _LeanEvent

        self.close_sent = self.disconnected = False
        self.handshake_complete, self.initial_response = True, None
        self.writable = _LeanEvent()
        self.writable.set()
        self.conn = type("Conn", (), {"state": State.OPEN, "extensions": [], "writes": [],
                                      "expect_continuation_frame": False, "debug": False})()
        self.transport = self
        self.written: list[bytes] = []

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.written.append(data)
