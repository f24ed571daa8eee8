"""The native wire (livegate.transport.native) without sockets: a client speaking through
websockets' public sans-I/O ``ClientProtocol`` and a transport that records what is written."""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from livegate.transport.native import NativeOptions, WebSocketProtocol, websocket_protocol
from tests.transport._fakes import FakeTransport


class Recorder:
    """An endpoint that records what the wire tells it."""

    def __init__(self, wire: Any) -> None:
        self.wire = wire
        self.calls: list[tuple[str, Any]] = []

    def open(self) -> None:
        self.calls.append(("open", None))

    def text_received(self, data: str) -> None:
        self.calls.append(("text", data))

    def binary_received(self, size: int) -> None:
        self.calls.append(("binary", size))

    def drained(self) -> None:
        self.calls.append(("drained", None))

    def connection_lost(self) -> None:
        self.calls.append(("lost", None))


class Peer:
    def __init__(self, path: str = "/v1/ws", **options: Any) -> None:
        self.endpoints: list[Recorder] = []

        def endpoint(wire: Any, request: Any) -> Recorder:
            self.endpoints.append(Recorder(wire))
            return self.endpoints[-1]

        self.protocol: WebSocketProtocol = websocket_protocol(NativeOptions(endpoint, **options))(config=None)
        self.transport = FakeTransport()
        self.protocol.connection_made(self.transport)
        self.client = ClientProtocol(parse_uri("ws://localhost" + path))
        self.client.send_request(self.client.connect())
        self._push()

    def _push(self) -> None:
        for data in self.client.data_to_send():
            if data:
                self.protocol.data_received(data)

    def send(self, opcode: Opcode, data: bytes, fin: bool = True) -> None:
        if opcode is Opcode.TEXT:
            self.client.send_text(data, fin=fin)
        elif opcode is Opcode.BINARY:
            self.client.send_binary(data, fin=fin)
        elif opcode is Opcode.CONT:
            self.client.send_continuation(data, fin=fin)
        elif opcode is Opcode.PONG:
            self.client.send_pong(data)
        self._push()

    def received(self) -> list[Any]:
        self.client.receive_data(bytes(self.transport.written))
        self.transport.written.clear()
        return self.client.events_received()


async def test_handshake_then_text_binary_and_fragments_reach_the_endpoint() -> None:
    peer = Peer(heartbeat_interval=None)
    (response,) = peer.received()
    assert isinstance(response, Response) and response.status_code == 101
    (endpoint,) = peer.endpoints
    peer.send(Opcode.TEXT, b'{"type":"ping"}')
    peer.send(Opcode.BINARY, b"\x00\x01\x02")
    peer.send(Opcode.TEXT, b"frag", fin=False)
    peer.send(Opcode.CONT, "mént".encode(), fin=True)
    assert endpoint.calls == [("open", None), ("text", '{"type":"ping"}'), ("binary", 3), ("text", "fragmént")]
    endpoint.wire.write('{"a":1}')
    (frame,) = peer.received()
    assert isinstance(frame, Frame) and frame.opcode is Opcode.TEXT and frame.data == b'{"a":1}'


async def test_other_paths_are_404_and_reach_no_endpoint() -> None:
    peer = Peer("/elsewhere", heartbeat_interval=None)
    (response,) = peer.received()
    assert response.status_code == 404 and not peer.endpoints and peer.transport.closed


async def test_invalid_utf8_is_1007() -> None:
    peer = Peer(heartbeat_interval=None)
    peer.received()
    peer.send(Opcode.TEXT, b"\xff\xfe")
    (close,) = peer.received()
    assert close.opcode is Opcode.CLOSE and int.from_bytes(close.data[:2], "big") == 1007
    assert ("text", "\ufffd") not in peer.endpoints[0].calls


async def test_close_with_a_code_then_the_peer_answers_and_tcp_closes() -> None:
    peer = Peer(heartbeat_interval=None)
    peer.received()
    wire = peer.endpoints[0].wire
    wire.write('{"last":true}')
    wire.close(4000, "server_restart")
    wire.write('{"too":"late"}')
    frames = peer.received()
    assert [f.opcode for f in frames] == [Opcode.TEXT, Opcode.CLOSE]
    assert int.from_bytes(frames[1].data[:2], "big") == 4000
    for data in peer.client.data_to_send():  # the client echoes the close
        if data:
            peer.protocol.data_received(data)
    assert peer.transport.closed
    peer.protocol.connection_lost(None)
    assert peer.endpoints[0].calls[-1] == ("lost", None)


async def test_a_silent_peer_is_closed_with_4002_and_an_answering_one_is_kept() -> None:
    answering = Peer(heartbeat_interval=0.02, heartbeat_timeout=0.05)
    deaf = Peer(heartbeat_interval=0.02, heartbeat_timeout=0.05)
    answering.received(), deaf.received()
    for _ in range(10):
        await asyncio.sleep(0.02)
        for event in answering.received():
            if event.opcode is Opcode.PING:
                answering.send(Opcode.PONG, event.data)
    assert not answering.transport.closed
    frames = deaf.received()
    assert frames[-1].opcode is Opcode.CLOSE and int.from_bytes(frames[-1].data[:2], "big") == 4002
    assert deaf.transport.closed


async def test_flow_control_is_the_wires_writable_and_the_endpoints_drained() -> None:
    peer = Peer(heartbeat_interval=None)
    peer.received()
    wire, endpoint = peer.endpoints[0].wire, peer.endpoints[0]
    assert wire.writable
    peer.protocol.pause_writing()
    assert not wire.writable
    peer.protocol.resume_writing()
    assert wire.writable and endpoint.calls[-1] == ("drained", None)
