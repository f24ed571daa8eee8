"""Streamed text as exact deltas (sans-I/O): asyncapi.yaml, "Streamed text".

A ``generationProgress`` carries ``textDelta`` (text added) and ``textOffset`` (where it
starts in the generation's full text, in UTF-16 code units, as JavaScript indexes
strings). The text after an event is ``text[:textOffset] + textDelta`` (in those units).

* :func:`merge` folds two consecutive deltas of one generation into one, so that conflation
  (protocol/outbox.py) of a slow reader keeps the text exact; :func:`merge_frames` does it on
  two encoded frames.
* :class:`TextAssembler` rebuilds each generation's text from the deltas a reader receives
  (the Python client, and the server for connections that did not ask for
  ``auth.textDeltas``), holds the deltas of a generation joined mid-stream until a prefix
  arrives (:meth:`TextAssembler.seed`, from ``GET /v1/generations/{id}``), and skips a
  progress event older than one it applied (a replay after a conflation).
* :class:`LegacyText` rewrites delta frames into the deprecated ``partialText`` form for
  connections that did not ask for deltas.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

#: Generations one assembler tracks at once; the oldest is forgotten past this (a reader
#: with more concurrent streamed runs loses only the oldest one's prefix, never exactness:
#: it then waits for a prefix like a late joiner).
MAX_GENERATIONS = 64
FINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})

_decode = msgspec.json.Decoder(dict[str, Any]).decode
_encode = msgspec.json.Encoder().encode


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units (JavaScript's ``string.length``)."""
    if text.isascii():
        return len(text)
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def utf16_prefix(text: str, units: int) -> str:
    """The first ``units`` UTF-16 code units of ``text`` (``text.slice(0, units)`` in JS).
    Offsets from the server never split a surrogate pair."""
    if text.isascii():
        return text[:units]
    return text.encode("utf-16-le")[: 2 * units].decode("utf-16-le", "replace")


def apply(text: str, offset: int, delta: str) -> str | None:
    """The text after a delta at ``offset``; ``None`` when ``offset`` is beyond ``text``
    (the prefix is missing)."""
    length = utf16_len(text)
    if offset == length:
        return text + delta
    if offset > length:
        return None
    return utf16_prefix(text, offset) + delta


def merge(offset1: int, delta1: str, offset2: int, delta2: str) -> tuple[int, str] | None:
    """One delta equal to applying ``(offset1, delta1)`` then ``(offset2, delta2)``, or
    ``None`` when the second starts beyond the end of the first (not consecutive)."""
    if offset2 < offset1:
        return offset2, delta2
    end1 = offset1 + utf16_len(delta1)
    if offset2 == end1:
        return offset1, delta1 + delta2
    if offset2 > end1:
        return None
    return offset1, utf16_prefix(delta1, offset2 - offset1) + delta2


def text_fields(body: dict[str, Any]) -> tuple[int, str] | None:
    offset, delta = body.get("textOffset"), body.get("textDelta")
    if isinstance(offset, int) and isinstance(delta, str):
        return offset, delta
    return None


def merge_frames(older: str, newer: str) -> str | None:
    """``newer`` carrying the text of both (``older`` is about to be dropped for it), or
    ``None`` when the two cannot be merged (the caller keeps both). ``newer`` itself when
    ``older`` has no delta."""
    if '"textDelta"' not in older:
        return newer
    old_body = _decode(older)
    old_text = text_fields(old_body)
    if old_text is None:
        return newer
    new_body = _decode(newer)
    new_text = text_fields(new_body)
    if new_text is None:
        if "partialText" in new_body:
            return None  # a whole-text event after a delta: keep both, in order
        merged = old_text
    else:
        joined = merge(*old_text, *new_text)
        if joined is None:
            return None
        merged = joined
    new_body["textOffset"], new_body["textDelta"] = merged
    return _encode(new_body).decode()


@dataclass(slots=True)
class _Text:
    text: str | None = None  # None: joined mid-stream, waiting for a prefix
    last_event: int = 0  # stream offset of the last progress applied
    held: list[tuple[int, str]] = field(default_factory=list)  # deltas waiting for a prefix


class TextAssembler:
    """The text of each generation, rebuilt from the deltas received, in stream order."""

    def __init__(self, max_generations: int = MAX_GENERATIONS) -> None:
        self._texts: OrderedDict[str, _Text] = OrderedDict()
        self.max_generations = max_generations

    def text(self, generation_id: str) -> str | None:
        entry = self._texts.get(generation_id)
        return entry.text if entry is not None else None

    def waiting(self, generation_id: str) -> bool:
        """A prefix is needed (deltas are held for it)."""
        entry = self._texts.get(generation_id)
        return entry is not None and entry.text is None

    def _entry(self, generation_id: str) -> _Text:
        entry = self._texts.get(generation_id)
        if entry is None:
            entry = self._texts[generation_id] = _Text()
            while len(self._texts) > self.max_generations:
                self._texts.popitem(last=False)
        return entry

    def stale(self, generation_id: str, event_offset: int) -> bool:
        entry = self._texts.get(generation_id)
        return entry is not None and event_offset <= entry.last_event

    def apply(self, generation_id: str, event_offset: int, text_offset: int, delta: str) -> str | None:
        """Apply one event's delta; the whole text, or ``None`` while the prefix is missing
        (the delta is held until :meth:`seed`)."""
        entry = self._entry(generation_id)
        if event_offset <= entry.last_event:
            return entry.text  # older than what was applied (a replay after a conflation)
        entry.last_event = event_offset
        if entry.text is None and not entry.held and text_offset == 0:
            entry.text = ""
        if entry.text is not None:
            text = apply(entry.text, text_offset, delta)
            if text is not None:
                entry.text = text
                return text
            entry.text = None  # a gap (cannot happen on one connection; resync)
        entry.held.append((text_offset, delta))
        return None

    def replace(self, generation_id: str, event_offset: int, text: str) -> None:
        """A whole text (``partialText`` of a publisher that sends no deltas)."""
        entry = self._entry(generation_id)
        if event_offset > entry.last_event:
            entry.last_event, entry.text, entry.held = event_offset, text, []

    def seed(self, generation_id: str, prefix: str) -> str | None:
        """A prefix of the text (``GET`` snapshot ``partialText``): the whole text when it
        reaches the first held delta, else ``None`` (fetch again later)."""
        entry = self._texts.get(generation_id)
        if entry is None or entry.text is not None:
            return entry.text if entry is not None else None
        if entry.held and utf16_len(prefix) < entry.held[0][0]:
            return None
        text: str | None = prefix
        for offset, delta in entry.held:
            text = apply(text, offset, delta) if text is not None else None
        if text is None:
            return None
        entry.text, entry.held = text, []
        return text

    def forget(self, generation_id: str) -> None:
        self._texts.pop(generation_id, None)


class LegacyText:
    """Rewrites ``generationProgress`` frames for a connection that did not ask for
    ``auth.textDeltas``: ``textDelta``/``textOffset`` become the deprecated ``partialText``
    (the whole text so far), as the stream was before deltas. A generation joined
    mid-stream gets frames without ``partialText`` until ``lookup`` (the text of a run of
    this process) or :meth:`seed` gives its prefix."""

    def __init__(self, lookup: Callable[[str], str | None] | None = None) -> None:
        self.assembler = TextAssembler()
        self._lookup = lookup
        #: Generations whose prefix the I/O layer should fetch (from the store: the run is on
        #: another process); it takes them and calls :meth:`seed`, then :meth:`ask_again`
        #: (at once, or a while later when the prefix did not reach the held deltas).
        self.wanted: list[str] = []
        self._asked: set[str] = set()

    def frame(self, data: str) -> str:
        """The frame to write instead of ``data``."""
        if '"generationUpdate"' in data:  # a final one ends the generation's text
            body = _decode(data)
            if body.get("status") in FINAL_STATUSES and isinstance(body.get("generationId"), str):
                self.assembler.forget(body["generationId"])
                self._asked.discard(body["generationId"])
            return data
        if '"textDelta"' not in data:
            return data
        body = _decode(data)
        fields = text_fields(body)
        gen_id = body.get("generationId")
        if body.get("type") != "generationProgress" or fields is None or not isinstance(gen_id, str):
            return data
        assembler = self.assembler
        text = assembler.apply(gen_id, int(body.get("offset", 0)), *fields)
        if text is None and self._lookup is not None:
            prefix = self._lookup(gen_id)
            if prefix is not None:
                text = assembler.seed(gen_id, prefix)
        if text is None and gen_id not in self._asked:
            self._asked.add(gen_id)
            self.wanted.append(gen_id)
        del body["textOffset"], body["textDelta"]
        if text is not None:
            body["partialText"] = text
        return _encode(body).decode()

    def seed(self, generation_id: str, prefix: str | None) -> bool:
        """A fetched prefix (``None``: none was found); ``True`` when the generation's text
        is known now (or the generation is no longer tracked)."""
        if prefix is not None:
            self.assembler.seed(generation_id, prefix)
        return not self.assembler.waiting(generation_id)

    def ask_again(self, generation_id: str) -> None:
        """The next frame of the generation may ask for its prefix again."""
        self._asked.discard(generation_id)


__all__ = ["LegacyText", "TextAssembler", "apply", "merge", "merge_frames", "utf16_len", "utf16_prefix"]
