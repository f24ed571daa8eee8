"""A client's stream cursor: dedupe by offset and the resume position (sans-I/O).

The resume position is the highest offset ``N`` such that every offset ``<= N`` was
received or named in a received ``supersedes`` (asyncapi.yaml, "Conflation"). Resuming
from it never loses an event, and duplicates are dropped by offset.
"""

from __future__ import annotations

from collections.abc import Iterable


class StreamCursor:
    def __init__(self, epoch: str | None = None, offset: int = 0) -> None:
        self.epoch = epoch
        self.offset = offset  # contiguous: everything <= offset is accounted for
        self._ahead: set[int] = set()

    def reset(self, epoch: str, offset: int) -> None:
        self.epoch, self.offset = epoch, offset
        self._ahead.clear()

    def accept(self, epoch: str, offset: int, supersedes: Iterable[int] = ()) -> bool:
        """Record an event; ``False`` when it is a duplicate (or of another epoch)."""
        if epoch != self.epoch or offset <= self.offset or offset in self._ahead:
            return False
        self._ahead.add(offset)
        self._ahead.update(o for o in supersedes if o > self.offset)
        while self.offset + 1 in self._ahead:
            self.offset += 1
            self._ahead.discard(self.offset)
        return True

    @property
    def pending_gap(self) -> bool:
        """Events beyond a hole were seen (a conflation whose superseding event is in flight)."""
        return bool(self._ahead)
