"""The bounded per-connection outbound queue and its conflation policy (sans-I/O).

Rules (asyncapi.yaml, "Conflation"):

* The queue is bounded in bytes. A push that leaves it over the bound reports overflow;
  the I/O layer then closes with 4001 (slow consumer) and the client resumes.
* A ``generationProgress`` carries a conflation key (its generation id). When a newer one
  with the same key is pushed while an older one is still queued, the older one is
  removed and its offset (and whatever it superseded) is listed in the newer one's
  ``supersedes``. The newer one goes to the back, so offsets stay ascending on the wire.
* Streamed text is **merged**, not dropped: the newer one's ``textDelta`` becomes the
  older one's followed by its own, from the older one's ``textOffset``
  (:func:`livegate.protocol.textdelta.merge_frames`), so a conflated stream rebuilds the
  exact text. Two that cannot be merged (a whole ``partialText`` after a delta) both stay.
* Everything else (``generationUpdate``, ``notification``, control frames) is never dropped.

A fast reader drains the queue at once, so nothing is ever conflated for it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from livegate.protocol.textdelta import merge_frames


@dataclass(slots=True)
class Outgoing:
    data: str
    offset: int | None = None
    conflation_key: str | None = None
    supersedes: list[int] | None = None  # made only when this event conflates older ones
    published_at: float = 0.0
    # A resume replay: events the writer sends one by one, with backpressure. Not counted
    # against the byte bound (it is history, already bounded) and never conflated.
    replay: Sequence[Any] | None = None

    def frame(self) -> str:
        """The text to send; ``supersedes`` is spliced in only for conflated events."""
        if not self.supersedes:
            return self.data
        offsets = ",".join(str(o) for o in sorted(self.supersedes))
        return '{"supersedes":[' + offsets + "]," + self.data[1:]


class Outbox:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        #: The queued items in order, by push sequence. Read-only outside this class; its
        #: truthiness is the fan-out's "anything queued?" (a C call, where ``len(outbox)``
        #: is a Python one on every delivery).
        self.items: OrderedDict[int, Outgoing] = OrderedDict()
        self._by_key: dict[str, int] = {}
        self._seq = 0
        self.bytes = 0
        self.conflated = 0  # events dropped in favour of a newer one (for metrics)

    def __len__(self) -> int:
        return len(self.items)

    def push(self, item: Outgoing) -> bool:
        """Queue ``item``; return ``False`` when the queue is over its byte bound."""
        key = item.conflation_key
        if key is not None:
            older_seq = self._by_key.pop(key, None)
            merged = None if older_seq is None else merge_frames(self.items[older_seq].data, item.data)
            if older_seq is not None and merged is not None:
                item.data = merged
                older = self.items.pop(older_seq)
                self.bytes -= len(older.data)
                supersedes = item.supersedes if item.supersedes is not None else []
                supersedes.extend(older.supersedes or ())
                if older.offset is not None:
                    supersedes.append(older.offset)
                item.supersedes = supersedes
                self.conflated += 1
        self._seq += 1
        self.items[self._seq] = item
        if key is not None:
            self._by_key[key] = self._seq
        self.bytes += len(item.data)
        return self.bytes <= self.max_bytes

    def drain(self) -> list[Outgoing]:
        """Take every queued item, in order."""
        items = []
        while (item := self.pop()) is not None:
            items.append(item)
        return items

    def pop(self) -> Outgoing | None:
        if not self.items:
            return None
        seq, item = self.items.popitem(last=False)
        if item.conflation_key is not None and self._by_key.get(item.conflation_key) == seq:
            del self._by_key[item.conflation_key]
        self.bytes -= len(item.data)
        return item
