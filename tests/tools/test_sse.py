from __future__ import annotations

import pytest

from livegate.tools.sse import SSEDecoder, SSEEvent

from .conftest import OPENAI_FIXTURES

SSE_FILES = sorted(OPENAI_FIXTURES.rglob("*.sse"))


def decode(chunks: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.close()


@pytest.mark.parametrize("path", SSE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fixture_streams_decode_the_same_however_they_are_cut(path) -> None:  # type: ignore[no-untyped-def]
    raw = path.read_bytes()
    whole = decode([raw])
    assert whole and all(e.data for e in whole)
    assert decode([raw[i : i + 1] for i in range(len(raw))]) == whole
    for cut in range(0, len(raw), 7):
        assert decode([raw[:cut], raw[cut:]]) == whole


def test_chat_fixture_events() -> None:
    events = decode([(OPENAI_FIXTURES / "chat_completions/stream_basic.response.sse").read_bytes()])
    assert events[-1].data == "[DONE]" and len(events) == 10
    assert all(e.event is None for e in events)


def test_image_stream_has_event_names() -> None:
    events = decode([(OPENAI_FIXTURES / "images/generations_stream.response.sse").read_bytes()])
    assert [e.event for e in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_line_endings(newline: bytes) -> None:
    raw = newline.join([b"event: a", b"data: 1", b"data:2", b"", b"data: x", b"", b""])
    assert decode([raw]) == [SSEEvent("1\n2", "a"), SSEEvent("x")]
    assert decode([raw[i : i + 1] for i in range(len(raw))]) == decode([raw])


def test_crlf_split_across_chunks_is_one_line_end() -> None:
    assert decode([b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n"]) == [SSEEvent("a"), SSEEvent("b")]


def test_comments_fields_and_incomplete_events() -> None:
    raw = b": keep-alive\nid: 7\nretry: 1500\nfoo: bar\ndata:  two spaces\n\nevent: lonely\n\ndata: cut"
    assert decode([raw]) == [SSEEvent(" two spaces", None, "7", 1500)]


def test_utf8_split_inside_a_character() -> None:
    raw = "data: héllo ✓\n\n".encode()
    assert decode([raw[:8], raw[8:9], raw[9:]]) == [SSEEvent("héllo ✓")]
