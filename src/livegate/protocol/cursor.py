"""A client's stream cursor: dedupe by offset and the resume position (sans-I/O).

The resume position is the highest offset ``N`` such that every offset ``<= N`` was
received or named in a received ``supersedes`` (asyncapi.yaml, "Conflation"). Resuming
from it never loses an event, and duplicates are dropped by offset.

Next to it the cursor keeps the ``timestamp`` of the event at ``N``, exactly as received
(asyncapi.yaml ``StreamPosition.timestamp``): the server checks that its stream still holds
that very event at ``N`` and answers ``recovered: false`` when a rewound history was written
again under the same epoch. It is known only when ``N`` is an event this cursor received:
``None`` when ``N`` was reached only through ``supersedes``, after a ``welcome`` reset (the
welcome carries a position, not an event), or for a position restored without one.
"""

from __future__ import annotations

from collections.abc import Iterable


class StreamCursor:
    def __init__(self, epoch: str | None = None, offset: int = 0, timestamp: str | None = None) -> None:
        self.epoch = epoch
        self.offset = offset  # contiguous: everything <= offset is accounted for
        self.timestamp = timestamp  # of the event received at `offset`; None when not received
        self._ahead: dict[int, str | None] = {}  # offsets beyond a hole -> received timestamp

    def reset(self, epoch: str, offset: int, timestamp: str | None = None) -> None:
        self.epoch, self.offset, self.timestamp = epoch, offset, timestamp
        self._ahead.clear()

    def accept(self, epoch: str, offset: int, supersedes: Iterable[int] = (), timestamp: str | None = None) -> bool:
        """Record an event (``timestamp`` as received); ``False`` when it is a duplicate (or of
        another epoch)."""
        if epoch != self.epoch or offset <= self.offset or offset in self._ahead:
            return False
        self._ahead[offset] = timestamp
        for superseded in supersedes:
            if superseded > self.offset:
                self._ahead.setdefault(superseded, None)  # an event received there keeps its own
        while self.offset + 1 in self._ahead:
            self.offset += 1
            self.timestamp = self._ahead.pop(self.offset)
        return True

    @property
    def pending_gap(self) -> bool:
        """Events beyond a hole were seen (a conflation whose superseding event is in flight)."""
        return bool(self._ahead)
