"""RFC 6455 framing against a real ``livegate serve``, frame by frame (issue 14): each hostile
or unusual frame gets the answer asyncapi.yaml documents (``x-transport-close-codes`` for the
transport's RFC 6455 closes, the ``error`` table otherwise), so a change of transport cannot
regress it silently. The frames are built by hand (tests/transport/_raw.py): client libraries
refuse to send most of them."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator

import pytest

from livegate.testing.process import GatewayProcess
from livegate.testing.spec_validation import assert_valid_message
from tests.transport._raw import (
    TRANSPORT_CLOSE_CODES,
    Raw,
    assert_no_error_logs,
    close_payload,
    frame,
)

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
MAX_FRAME_BYTES = 1024  # the transport's own bound is 4x: 4096 bytes


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with GatewayProcess(tmp_path_factory.mktemp("frames"), env={"LIVEGATE_MAX_FRAME_BYTES": str(MAX_FRAME_BYTES)}) as gw:
        yield gw
        assert_no_error_logs(gw.log_path)


async def _live(gw: GatewayProcess) -> Raw:
    raw = await Raw.connect(gw.port)
    await raw.handshake()
    await raw.auth(gw.token("framer"))
    return raw


async def _reply(raw: Raw) -> dict[str, object]:
    opcode, data = await raw.next_frame()
    assert opcode == TEXT, (opcode, data)
    return assert_valid_message(data.decode())


async def _closed_with(raw: Raw, name: str) -> None:
    code = await raw.expect_close()
    assert TRANSPORT_CLOSE_CODES.get(code) == name, (code, TRANSPORT_CLOSE_CODES)


async def test_a_fragmented_message_is_reassembled_even_across_a_utf8_sequence(gateway: GatewayProcess) -> None:
    raw = await _live(gateway)
    message = json.dumps({"type": "ping", "id": "frag-é"}, ensure_ascii=False).encode()
    cut = message.index("é".encode()) + 1  # inside the two-byte sequence
    await raw.send(frame(TEXT, message[:5], fin=False) + frame(CONT, message[5:cut], fin=False)
                   + frame(CONT, message[cut:]))
    reply = await _reply(raw)
    assert reply["type"] == "pong" and reply["id"] == "frag-é"


async def test_control_frames_between_fragments_are_answered_and_the_message_reassembled(gateway: GatewayProcess) -> None:
    raw = await _live(gateway)
    await raw.send(frame(TEXT, b'{"type":"ping",', fin=False) + frame(PING, b"between")
                   + frame(PONG, b"unsolicited") + frame(CONT, b'"id":"after"}'))
    # Both are answered (the order between the two answers is free: RFC 6455 5.5.2 asks for
    # the pong "as soon as practical").
    answers = dict([await raw.next_frame(), await raw.next_frame()])
    assert answers[PONG] == b"between"
    reply = assert_valid_message(answers[TEXT].decode())
    assert reply["type"] == "pong" and reply["id"] == "after"


async def test_binary_frames_get_the_non_fatal_binary_frame_error(gateway: GatewayProcess) -> None:
    raw = await _live(gateway)
    await raw.send(frame(BINARY, b"\x00\x01", fin=False) + frame(CONT, b"\x02"))
    error = await _reply(raw)
    assert error["type"] == "error" and error["code"] == "binary_frame" and error["fatal"] is False
    await raw.send(frame(TEXT, b'{"type":"ping","id":"still-open"}'))
    assert (await _reply(raw))["id"] == "still-open"


@pytest.mark.parametrize(("data", "name"), [
    pytest.param(frame(CONT, b"orphan"), "protocol_error", id="continuation-without-a-start"),
    pytest.param(frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"), "protocol_error", id="new-message-inside-one"),
    pytest.param(frame(TEXT, b'{"type":"ping"}', rsv=0b100), "protocol_error", id="rsv1-without-extension"),
    pytest.param(frame(TEXT, b'{"type":"ping"}', rsv=0b011), "protocol_error", id="rsv2-rsv3"),
    pytest.param(frame(TEXT, b'{"type":"ping"}', mask=False), "protocol_error", id="unmasked"),
    pytest.param(frame(0x3, b"x"), "protocol_error", id="reserved-opcode"),
    pytest.param(frame(PING, b"p" * 126), "protocol_error", id="control-frame-over-125-bytes"),
    pytest.param(frame(PING, b"p", fin=False), "protocol_error", id="fragmented-control-frame"),
    pytest.param(frame(CLOSE, b"\x03"), "protocol_error", id="close-payload-of-1-byte"),
    pytest.param(frame(TEXT, b'{"type":"ping","id":"\xff"}'), "invalid_payload", id="invalid-utf8"),
    pytest.param(frame(TEXT, b'{"id":"\xe2\x82', fin=False) + frame(CONT, b'"}'), "invalid_payload",
                 id="invalid-utf8-across-fragments"),
    pytest.param(frame(CLOSE, close_payload(1000, b"\xff")), "invalid_payload", id="close-reason-not-utf8"),
])
async def test_broken_frames_close_with_the_documented_rfc_6455_code(gateway: GatewayProcess, data: bytes,
                                                                    name: str) -> None:
    raw = await _live(gateway)
    await raw.send(data)
    await _closed_with(raw, name)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 2999, 5000])
async def test_close_codes_a_peer_may_not_send_are_1002(gateway: GatewayProcess, code: int) -> None:
    raw = await _live(gateway)
    await raw.send(frame(CLOSE, close_payload(code)))
    await _closed_with(raw, "protocol_error")


@pytest.mark.parametrize("code", [1000, 1001, 3000, 4999])
async def test_a_valid_close_is_echoed_and_tcp_ends(gateway: GatewayProcess, code: int) -> None:
    raw = await _live(gateway)
    await raw.send(frame(CLOSE, close_payload(code, b"bye")))
    opcode, data = await raw.next_frame()
    assert opcode == CLOSE and struct.unpack("!H", data[:2])[0] == code
    assert await raw.closed_by_server()


@pytest.mark.parametrize("declared", [4097, 2**31, 2**63 - 1])
async def test_a_declared_length_over_the_limit_is_1009_before_its_payload(gateway: GatewayProcess,
                                                                           declared: int) -> None:
    raw = await _live(gateway)
    await raw.send(frame(TEXT, b"", length=declared))  # the header alone: no payload is ever sent
    await _closed_with(raw, "message_too_big")


async def test_fragments_adding_up_over_the_limit_are_1009(gateway: GatewayProcess) -> None:
    raw = await _live(gateway)
    part = b"x" * 1000
    await raw.send(frame(TEXT, part, fin=False) + b"".join(frame(CONT, part, fin=False) for _ in range(4)))
    await _closed_with(raw, "message_too_big")


async def test_a_message_over_our_limit_but_under_the_transports_is_frame_too_large(gateway: GatewayProcess) -> None:
    raw = await _live(gateway)
    await raw.send(frame(TEXT, json.dumps({"type": "ping", "id": "x" * 2000}).encode()))
    error = await _reply(raw)
    assert error["code"] == "frame_too_large" and error["fatal"] is True
    assert await raw.expect_close() == 4400


async def test_before_auth_broken_framing_gets_the_same_answer(gateway: GatewayProcess) -> None:
    raw = await Raw.connect(gateway.port)
    await raw.handshake()
    await raw.send(frame(TEXT, b'{"type":"auth"}', mask=False))
    await _closed_with(raw, "protocol_error")
