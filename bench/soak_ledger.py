"""The chaos soak's ledger: what was published, what every connection was given, and the verdict.

Pure bookkeeping (no I/O, no clock), so its rules are unit-tested on their own
(``tests/bench/test_soak_ledger.py``); ``bench/soak.py`` feeds it.

Vocabulary
==========

* An **event** is one item of a ``POST /v1/events`` call. Each carries a unique *event id* in its
  payload (``message`` of a ``notification`` or a ``generationProgress``), so a delivered frame
  names the publish it came from whatever its offset.
* Publish outcomes: **acknowledged** (2xx, or listed in the ``results`` of a 503's problem body):
  the gateway assigned it ``(epoch, offset)``; **unknown** (a 5xx without it in ``results``, a
  timeout, a dropped connection after the request was sent): it may or may not have been
  appended; **refused** (the request never left: connection refused, or a 4xx): never appended.
* A **connection** is one :class:`livegate.client.LivegateClient` (one "tab"), across all its
  reconnects. The ledger sees what the client API surfaces: every ``Welcome`` and every stream
  event ``messages()`` yields (the client has already dropped frames whose offset it had), plus
  the raw progress frames (``on_frame``) for the client-side conflation rule below.
* A **segment** of a connection starts at a welcome that is not ``recovered: true`` (the first
  one, or a reset: ``recovered: false``) at ``(epoch E, offset B)`` and runs until the next such
  welcome. Within it, the connection owes nothing at or below ``B`` (it either joined there, or
  the server announced the loss of what came before). A ``recovered: true`` welcome continues
  the segment (and must carry the segment's epoch).

The verdict
===========

For every connection and every segment ``(E, B)``:

* Offset ``o`` of ``E`` is **accounted** when the client yielded the event at ``(E, o)``, or
  yielded a ``generationProgress`` that lists ``o`` in ``supersedes`` (server conflation), or the
  raw frame at ``(E, o)`` was a ``generationProgress`` that the client skipped because it had
  already yielded a newer progress of the same generation (client conflation,
  ``LivegateClient._handle``). A superseded offset whose event the ledger knows must be a
  progress of the same generation, else it is a *mismatch*.
* **Lost**: in the *last* segment, every offset in ``(B, T]`` must be accounted, where ``(E, T)``
  is the user's final position (``final_tops``: the offset of a marker published after the chaos
  stopped, so every earlier event is at or below it). Each offset that is not is one lost event,
  whatever it carried (an acknowledged event, or one of unknown outcome that is in the stream).
  A last segment on an epoch other than the final one lost all ``T`` events of the final epoch.
  Earlier segments end in a reset: the offsets after the connection's position there (the
  highest contiguous accounted offset) up to the next segment's ``B`` (same epoch), or to the
  end of the old epoch, are **announced lost** (allowed, counted apart), never "lost".
* **Duplicated**: the client yields an ``(epoch, offset)`` it already yielded, or an event id it
  already yielded (at any offset, in any epoch: the same publish surfaced twice, for instance
  appended twice). Each surplus yield counts once. Frames the server sends twice and the client
  drops by offset (a replay overlapping live events) are *not* duplicates: the contract lets
  the server do that (asyncapi.yaml, "drops duplicates by offset"); they are counted as
  ``raw_duplicates_dropped``.
* **Mismatched**: a yielded ``(E, o)`` carries another event id than the one acknowledged at
  ``(E, o)`` (or seen there by another connection of the user: a rewound stream reusing offsets),
  two acknowledgements name the same ``(E, o)``, a ``recovered: true`` welcome changes the
  epoch, a yielded event id that was never published or was refused (a phantom), or a bad
  ``supersedes``.
* **Unknown outcome** events are fine delivered once (to every connection whose segment covers
  their offset, by the lost rule) or not at all, never twice (by the duplicated rule).

The soak passes when lost, duplicated and mismatched are all 0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["Connection", "Ledger", "Verdict"]

PROGRESS = "generationProgress"
MAX_PROBLEMS = 40  # details kept for the report; the counts are always complete


@dataclass(slots=True)
class _Sent:
    user: str
    kind: str
    generation: str | None
    outcome: str = "pending"  # pending | acknowledged | unknown | refused
    position: tuple[str, int] | None = None


@dataclass(slots=True)
class _Yielded:
    epoch: str
    offset: int
    event_id: str
    kind: str
    generation: str | None
    supersedes: tuple[int, ...]


@dataclass(slots=True)
class _Segment:
    epoch: str
    base: int
    events: list[_Yielded] = field(default_factory=list)


@dataclass(slots=True)
class Connection:
    """One client's view, fed in the order the client API yields."""

    user: str
    name: str
    segments: list[_Segment] = field(default_factory=list)
    welcomes: int = 0
    resets: int = 0
    epoch_changes_on_recovered: int = 0
    _raw_seen: set[tuple[str, int]] = field(default_factory=set)
    raw_duplicates: int = 0
    raw_progress: dict[tuple[str, int], str] = field(default_factory=dict)  # (E, o) -> generation

    def welcome(self, epoch: str, offset: int, recovered: bool | None) -> None:
        self.welcomes += 1
        if recovered is True and self.segments:
            if self.segments[-1].epoch != epoch:
                self.epoch_changes_on_recovered += 1
                self.segments.append(_Segment(epoch, offset))
            return
        if self.segments:
            self.resets += 1
        self.segments.append(_Segment(epoch, offset))

    def event(self, epoch: str, offset: int, event_id: str, kind: str, generation: str | None = None,
              supersedes: Iterable[int] = ()) -> None:
        if not self.segments:  # the client yields a welcome before any event
            raise ValueError(f"{self.name}: event before any welcome")
        self.segments[-1].events.append(_Yielded(epoch, offset, event_id, kind, generation, tuple(supersedes)))

    def raw(self, epoch: str, offset: int, kind: str, generation: str | None = None) -> None:
        """Every stream frame as it arrived on the socket (before the client's dedupe)."""
        key = (epoch, offset)
        if key in self._raw_seen:
            self.raw_duplicates += 1
        self._raw_seen.add(key)
        if kind == PROGRESS and generation is not None:
            self.raw_progress[key] = generation

    @property
    def position(self) -> tuple[str, int] | None:
        """The highest contiguous accounted position of the current segment (what the
        client would resume from)."""
        if not self.segments:
            return None
        segment = self.segments[-1]
        return segment.epoch, _contiguous(segment.base, _accounted(segment, self.raw_progress))


def _accounted(segment: _Segment, raw_progress: Mapping[tuple[str, int], str]) -> set[int]:
    done: set[int] = set()
    newest: dict[str, int] = {}
    for ev in segment.events:
        if ev.epoch != segment.epoch:
            continue
        done.add(ev.offset)
        done.update(ev.supersedes)
        if ev.kind == PROGRESS and ev.generation is not None:
            newest[ev.generation] = max(newest.get(ev.generation, 0), ev.offset)
    for (epoch, offset), generation in raw_progress.items():
        if epoch == segment.epoch and offset > segment.base and newest.get(generation, 0) > offset:
            done.add(offset)  # skipped by the client behind a newer progress of its generation
    return done


def _contiguous(base: int, done: set[int]) -> int:
    position = base
    while position + 1 in done:
        position += 1
    return position


@dataclass
class Verdict:
    published: int = 0  # acknowledged
    unknown: int = 0
    unknown_appended: int = 0  # unknown outcome, seen in the stream by some connection
    refused: int = 0
    delivered: int = 0  # events yielded, over every connection
    expected: int = 0  # (connection, offset) pairs the last segments owed
    conflated: int = 0  # offsets accounted by supersedes / client conflation, not yielded
    lost: int = 0
    duplicated: int = 0
    mismatched: int = 0
    announced_lost: int = 0
    resets: int = 0
    raw_duplicates_dropped: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.mismatched == 0

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)


class Ledger:
    def __init__(self) -> None:
        self.sent: dict[str, _Sent] = {}
        self.connections: list[Connection] = []
        self._acked_at: dict[str, dict[tuple[str, int], str]] = {}  # user -> (E, o) -> event id
        self._double_acks: list[str] = []

    # -- the publisher's side ---------------------------------------------------------------

    def will_publish(self, event_id: str, user: str, kind: str, generation: str | None = None) -> None:
        if event_id in self.sent:
            raise ValueError(f"event id {event_id} reused")
        self.sent[event_id] = _Sent(user, kind, generation)

    def acknowledged(self, event_id: str, epoch: str, offset: int) -> None:
        sent = self.sent[event_id]
        sent.outcome, sent.position = "acknowledged", (epoch, offset)
        at = self._acked_at.setdefault(sent.user, {})
        other = at.setdefault((epoch, offset), event_id)
        if other != event_id:
            self._double_acks.append(f"{sent.user}: {other} and {event_id} both acknowledged at {epoch}:{offset}")

    def unknown(self, event_id: str) -> None:
        self.sent[event_id].outcome = "unknown"

    def refused(self, event_id: str) -> None:
        self.sent[event_id].outcome = "refused"

    # -- the connections' side ---------------------------------------------------------------

    def connection(self, user: str, name: str) -> Connection:
        conn = Connection(user, name)
        self.connections.append(conn)
        return conn

    # -- the verdict -------------------------------------------------------------------------

    def verdict(self, final_tops: Mapping[str, tuple[str, int]]) -> Verdict:
        """Check every connection; ``final_tops`` is each user's final ``(epoch, top)``."""
        v = Verdict()
        outcomes = Counter(s.outcome for s in self.sent.values())
        v.published, v.unknown, v.refused = outcomes["acknowledged"], outcomes["unknown"], outcomes["refused"]
        for text in self._double_acks:
            v.mismatched += 1
            v.problem(text)
        stream = {user: dict(at) for user, at in self._acked_at.items()}  # grows with seen unknowns
        unknown_seen: set[str] = set()
        for conn in self.connections:
            self._check_contents(conn, stream, unknown_seen, v)
        v.unknown_appended = len(unknown_seen)
        for conn in self.connections:
            self._check_coverage(conn, stream, final_tops.get(conn.user), v)
            v.resets += conn.resets
            v.raw_duplicates_dropped += conn.raw_duplicates
        return v

    def _check_contents(self, conn: Connection, stream: dict[str, dict[tuple[str, int], str]],
                        unknown_seen: set[str], v: Verdict) -> None:
        """Duplicates, phantoms and offsets carrying the wrong event."""
        at = stream.setdefault(conn.user, {})
        seen_positions: set[tuple[str, int]] = set()
        seen_ids: set[str] = set()
        if conn.epoch_changes_on_recovered:
            v.mismatched += conn.epoch_changes_on_recovered
            v.problem(f"{conn.name}: a recovered: true welcome changed the epoch")
        for segment in conn.segments:
            for ev in segment.events:
                v.delivered += 1
                position = (ev.epoch, ev.offset)
                if position in seen_positions or ev.event_id in seen_ids:
                    v.duplicated += 1
                    v.problem(f"{conn.name}: duplicate {ev.event_id} at {ev.epoch}:{ev.offset}")
                    continue
                seen_positions.add(position)
                seen_ids.add(ev.event_id)
                sent = self.sent.get(ev.event_id)
                if sent is None or sent.outcome in ("refused", "pending") or sent.user != conn.user:
                    v.mismatched += 1
                    v.problem(f"{conn.name}: phantom {ev.event_id} at {ev.epoch}:{ev.offset} "
                              f"({sent.outcome if sent else 'never published'})")
                    continue
                if sent.outcome == "unknown":
                    unknown_seen.add(ev.event_id)
                owner = at.setdefault(position, ev.event_id)
                if owner != ev.event_id:
                    v.mismatched += 1
                    v.problem(f"{conn.name}: {ev.epoch}:{ev.offset} carried {ev.event_id}, "
                              f"the stream has {owner} there")
                for superseded in ev.supersedes:
                    self._check_superseded(conn, ev, superseded, at, v)

    def _check_superseded(self, conn: Connection, ev: _Yielded, superseded: int,
                          at: Mapping[tuple[str, int], str], v: Verdict) -> None:
        owner = at.get((ev.epoch, superseded))
        if ev.kind != PROGRESS or superseded >= ev.offset:
            v.mismatched += 1
            v.problem(f"{conn.name}: {ev.event_id} ({ev.kind}) supersedes {superseded}")
            return
        if owner is None:
            return  # an event the ledger does not know (unknown outcome, seen by nobody)
        sent = self.sent[owner]
        if sent.kind != PROGRESS or sent.generation != ev.generation:
            v.mismatched += 1
            v.problem(f"{conn.name}: {ev.event_id} of {ev.generation} supersedes {owner} "
                      f"({sent.kind} of {sent.generation})")

    def _check_coverage(self, conn: Connection, stream: Mapping[str, Mapping[tuple[str, int], str]],
                        final: tuple[str, int] | None, v: Verdict) -> None:
        """Lost events (last segment) and announced losses (resets)."""
        if not conn.segments:
            if final is not None and final[1] > 0:
                v.lost += final[1]
                v.problem(f"{conn.name}: never welcomed")
            return
        at = stream.get(conn.user, {})
        for segment, following in zip(conn.segments, conn.segments[1:], strict=False):
            position = _contiguous(segment.base, _accounted(segment, conn.raw_progress))
            if following.epoch == segment.epoch:
                v.announced_lost += max(0, following.base - position)
            else:
                v.announced_lost += sum(1 for (e, o) in at if e == segment.epoch and o > position)
        last = conn.segments[-1]
        if final is None:
            return
        epoch, top = final
        if last.epoch != epoch:
            v.expected += top
            v.lost += top
            v.problem(f"{conn.name}: still on epoch {last.epoch}, the stream is on {epoch} (top {top})")
            return
        done = _accounted(last, conn.raw_progress)
        yielded = {ev.offset for ev in last.events if ev.epoch == last.epoch}
        missing = [o for o in range(last.base + 1, top + 1) if o not in done]
        v.expected += max(0, top - last.base)
        v.conflated += sum(1 for o in done if last.base < o <= top and o not in yielded)
        v.lost += len(missing)
        if missing:
            named = ", ".join(f"{o} ({at.get((epoch, o), '?')})" for o in missing[:8])
            v.problem(f"{conn.name}: lost {len(missing)} of ({last.base}, {top}] in {epoch}: {named}")
