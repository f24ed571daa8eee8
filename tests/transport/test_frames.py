"""The native wire's own frames are byte for byte websockets' (every length class)."""

from __future__ import annotations

from websockets.frames import Frame, Opcode

from livegate.transport.frames import TextFrames, unmasked_text_frame


def test_frames_are_the_bytes_websockets_would_send() -> None:
    for text in ("", "a", "x" * 125, "x" * 126, "x" * 127, "é" * 63, "€" * 42, "x" * 65535, "x" * 65536,
                 '{"type":"notification","message":"' + "ü" * 40_000 + '"}'):
        payload = text.encode()
        assert unmasked_text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[]), \
            len(payload)


def test_each_text_is_framed_once_and_a_new_text_never_gets_the_old_frame() -> None:
    frames = TextFrames()
    first, second = '{"offset":1}', '{"offset":2}'
    assert frames.frame(first) is frames.frame(first)
    assert frames.frame(second) == unmasked_text_frame(second.encode())
    equal_but_new = "".join(['{"offset":', "1}"])
    assert frames.frame(equal_but_new) == unmasked_text_frame(first.encode())
