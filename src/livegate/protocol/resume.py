"""Resume planning: may a connection continue from the position it asks for?

A stream position is ``(epoch, offset)``. Resume is honoured only when the epoch is the
stream's current one and every event after ``offset`` is still in history; otherwise the
answer is a reset (``welcome.recovered: false``) and *nothing* is replayed — a partial
replay is never presented as complete.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Fresh:
    """No resume asked: start live from the current top."""


@dataclass(frozen=True, slots=True)
class Replay:
    """Replay every event with offset > ``after`` (up to the read's top), then live."""

    after: int


@dataclass(frozen=True, slots=True)
class Reset:
    """The position cannot be honoured; the client must resync over HTTP."""

    reason: str


ResumePlan = Fresh | Replay | Reset


def plan_resume(
    requested_epoch: str | None,
    requested_offset: int | None,
    *,
    epoch: str,
    first_available: int,
    top: int,
) -> ResumePlan:
    """Decide from the stream's state as one atomic read saw it.

    ``first_available`` is the oldest offset still in history (``top + 1`` when history is
    empty); ``top`` the newest offset (0 for an empty stream).
    """
    if requested_epoch is None or requested_offset is None:
        return Fresh()
    if requested_epoch != epoch:
        return Reset("epoch changed: the stream's history was lost")
    if requested_offset > top:
        return Reset("offset is ahead of the stream")
    if requested_offset < first_available - 1:
        return Reset("events after the offset were evicted from history")
    return Replay(after=requested_offset)
