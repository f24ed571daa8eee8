"""The SSE framing of asyncapi.yaml ``sseStream`` (``x-sse``), pure."""

from __future__ import annotations

import json

import pytest

from livegate.errors import ContractError
from livegate.protocol import sse
from livegate.testing.spec_validation import assert_valid_message

NOTE = '{"epoch":"e1","offset":7,"timestamp":"2026-11-25T18:30:01Z","type":"notification","level":"info","message":"a"}'


def fields(event: bytes) -> list[tuple[str, str]]:
    text = event.decode()
    assert text.endswith("\n\n") and "\n\n" not in text[:-2]  # exactly one event
    return [tuple(line.split(": ", 1)) for line in text[:-2].split("\n")]  # type: ignore[misc]


def test_a_stream_event_carries_its_type_and_position() -> None:
    assert fields(sse.event(NOTE)) == [("event", "notification"), ("id", "e1:7"), ("data", NOTE)]


@pytest.mark.parametrize("recovered, has_id", [(None, True), (False, True), (True, False)])
def test_a_welcome_carries_its_position_unless_recovered(recovered: bool | None, has_id: bool) -> None:
    welcome = {"type": "welcome", "connectionId": "s-1", "userId": "u", "expiresAt": "2026-11-25T19:00:00Z",
               "heartbeatIntervalMs": 25000, "epoch": "e1", "offset": 4}
    if recovered is not None:
        welcome["recovered"] = recovered
    names = [name for name, _ in fields(sse.event(json.dumps(welcome)))]
    assert names == (["event", "id", "data"] if has_id else ["event", "data"])


def test_control_frames_carry_no_id() -> None:
    assert fields(sse.event('{"type":"pong","id":"p","serverTime":"2026-11-25T18:30:00Z"}'))[:2] == [
        ("event", "pong"), ("data", '{"type":"pong","id":"p","serverTime":"2026-11-25T18:30:00Z"}')]


def test_the_close_event_is_the_contracts() -> None:
    ((_, kind), (_, data)) = fields(sse.close_event(4001, "slow_consumer"))
    assert kind == "close"
    assert assert_valid_message(data, "sse") == {"type": "close", "code": 4001, "reason": "slow_consumer"}


def test_preamble_and_keepalive() -> None:
    assert sse.preamble(2000) == b"retry: 2000\n\n"
    assert sse.KEEPALIVE.startswith(b":")


@pytest.mark.parametrize("value, epoch, offset", [("e1:0", "e1", 0), ("a:b:12", "a:b", 12), (" e:3 ", "e", 3)])
def test_event_ids_parse_into_positions(value: str, epoch: str, offset: int) -> None:
    position = sse.parse_event_id(value, "$.x")
    assert (position.epoch, position.offset) == (epoch, offset)


@pytest.mark.parametrize("value", ["", "e", "e:", ":1", "e:-1", "e:1.0", "e:١", "e:" + "1" * 19, "e" * 65 + ":1"])
def test_anything_else_is_a_contract_error(value: str) -> None:
    with pytest.raises(ContractError) as refused:
        sse.parse_event_id(value, "$.headers.Last-Event-ID")
    assert refused.value.code == "validation_failed" and refused.value.path == "$.headers.Last-Event-ID"
