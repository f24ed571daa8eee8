"""Server frames the native wire writes itself (RFC 6455 section 5.2).

websockets' ``ServerProtocol.send_text`` builds a ``Frame`` and serialises it (~0.8 us per
frame); on the fan-out path, where one event goes to many connections without extensions,
the unmasked frame is a header and the payload. :class:`TextFrames` frames the last text
once for all its recipients: the bus hands every recipient of an event the same ``str``.
"""

from __future__ import annotations

import struct


def unmasked_text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame without extensions: byte for byte what
    ``websockets.frames.Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])``
    makes (tests/transport/test_frames.py checks every length class)."""
    length = len(payload)
    if length < 126:
        return bytes((0x81, length)) + payload
    if length < 65536:
        return struct.pack("!BBH", 0x81, 126, length) + payload
    return struct.pack("!BBQ", 0x81, 127, length) + payload


class TextFrames:
    """The frame of the last text framed, for every recipient of one event.

    One instance per server (not per connection, not a module global). It holds a
    reference to the text it framed, so an identity check cannot mistake a new ``str``
    for it."""

    __slots__ = ("_frame", "_text")

    def __init__(self) -> None:
        self._text: str | None = None
        self._frame = b""

    def frame(self, text: str) -> bytes:
        if text is not self._text:
            self._frame = unmasked_text_frame(text.encode())
            self._text = text
        return self._frame


__all__ = ["TextFrames", "unmasked_text_frame"]
