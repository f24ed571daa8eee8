"""What one connection's events and control frames do on their way to the wire (sans-I/O).

Rules (asyncapi.yaml, "Resume" and "Conflation"; close codes ``x-close-codes``):

* **Resume seam.** While the connection joins its stream, live events are *held back*
  (:meth:`Delivery.hold`); the join reads history after the asked offset, and
  :meth:`Delivery.start` decides the replay (:func:`~livegate.protocol.resume.plan_resume`)
  and releases the held-back events, of which only those above the read's top go on.
* **Replay in pages.** The join's read carries the first page of the replay only (a bounded
  number of events and bytes); once the writer has taken a page to the wire,
  :attr:`Delivery.page_wanted` names the offset the I/O layer reads the next page after,
  and :meth:`Delivery.add_page` hands it in. Until the replay reached the read's top
  nothing queued behind it is written (live events wait in the queue, within its bound), so
  one resume holds one page, not the whole history. A page that does not continue the
  replay (history trimmed or lost meanwhile) is refused; the connection then closes and the
  client resumes from what it got.
* **Offset filter.** Every offset reaches the wire at most once and in ascending order
  (a live event at or below what was queued, or a replayed one at or below what was sent,
  is dropped).
* **Write now or queue.** An event without a conflation key, or a control frame, is written
  at once when nothing is queued, the wire is writable and this burst (the frames written
  at once in one tick of the clock passed in) stays within the byte bound. Everything else
  is queued in the :class:`~livegate.protocol.outbox.Outbox` (where ``generationProgress``
  conflates) and taken with :meth:`Delivery.next_item` while the wire is writable.
* **Slow consumer.** A push that leaves the queue, plus this tick's burst, over the bound is
  :data:`OVERFLOW`: the I/O layer closes with 4001 (``slow_consumer``) and the client
  resumes from its last offset.
* Once closing (:meth:`Delivery.close`) nothing new is accepted; what is queued is flushed
  before the close frame.

The I/O layer (app/ws.py) passes the clock (a callable returning the current tick, asked
only when a frame could be written at once) and the wire's writability in, and carries out
the decision. Nothing here does I/O or reads a clock of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from livegate.protocol.outbox import Outbox, Outgoing
from livegate.protocol.resume import Fresh, Replay, ResumePlan, plan_resume

#: Decisions of :meth:`Delivery.offer` / :meth:`Delivery.offer_control` (plain ints: the
#: fan-out's hot path compares them once per delivery).
WRITE = 0  # write it to the wire now
QUEUED = 1  # queued: flush when the wire is writable (the I/O layer schedules it)
DROPPED = 2  # not for the wire (a duplicate offset, or the connection is closing)
HELD = 3  # held back until the join ends (resume seam)
OVERFLOW = 4  # the queue is over its bound: close with slow_consumer

Clock = Callable[[], int]


class Delivery:
    """One connection's delivery state; see the module doc for the rules."""

    __slots__ = (
        "_burst_at",
        "_burst_bytes",
        "_epoch",
        "_page_asked",
        "_paging",
        "_replay",
        "_replay_until",
        "closing",
        "held_back",
        "last_queued",
        "last_sent",
        "max_bytes",
        "outbox",
        "page_wanted",
        "replayed",
    )

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.outbox = Outbox(max_bytes)
        self.last_queued = 0  # highest stream offset accepted for the wire (written or queued)
        self.last_sent = 0  # highest stream offset written to the wire
        self.held_back: list[Any] | None = None
        self.closing = False
        self.replayed = 0  # replayed events handed out (for the delivery metric)
        self._replay: list[Any] | None = None  # the replay page being written, newest last (popped from the end)
        self._replay_until = 0  # the read's top: the replay ends there
        self._paging = False  # the replay was reached in the queue and has pages to go
        self.page_wanted: int | None = None  # read the next replay page after this offset
        self._page_asked = False  # the I/O layer took page_wanted and reads the page
        self._epoch = ""  # the stream's epoch the join read
        self._burst_at = -1
        self._burst_bytes = 0

    # -- joining the stream ---------------------------------------------------------------

    def hold(self) -> None:
        """The join starts: hold live events back until :meth:`start`."""
        self.held_back = []

    def start(self, requested_epoch: str | None, requested_offset: int | None, *, epoch: str,
              first_available: int, top: int) -> ResumePlan:
        """The join read the stream (one atomic look): plan the resume and set the positions
        the offset filter works from. Then the I/O layer sends ``welcome`` and calls
        :meth:`go_live`."""
        plan = plan_resume(requested_epoch, requested_offset, epoch=epoch, first_available=first_available,
                           top=top)
        self.last_queued = top
        self.last_sent = plan.after if isinstance(plan, Replay) else top
        self._replay_until = top if isinstance(plan, Replay) else 0
        self._epoch = epoch
        return plan

    def go_live(self, plan: ResumePlan, events: Sequence[Any]) -> list[Any]:
        """Queue the replay the plan asks for (after ``welcome``; ``events`` is its first
        page) and return the held-back live events, which the I/O layer offers again, in
        order."""
        if isinstance(plan, Replay) and self._replay_until > plan.after:
            self.outbox.push(Outgoing("", replay=events))
        held, self.held_back = self.held_back or [], None
        return held

    def take_page_request(self) -> int | None:
        """The offset to read the next replay page after, once (``None``: no page wanted,
        or it is being read already)."""
        after, self.page_wanted = self.page_wanted, None
        if after is not None:
            self._page_asked = True
        return after

    def add_page(self, epoch: str, events: Sequence[Any]) -> bool:
        """The page asked for by :meth:`take_page_request` (the stream's epoch and the events
        after that offset, oldest first). ``False`` when it does not continue the replay
        (another epoch, or a gap): the I/O layer closes the connection."""
        if not self._page_asked or not self._paging or self.closing:
            return True
        self._page_asked = False
        after = self.last_sent
        page = [event for event in events if event.offset <= self._replay_until]
        if epoch != self._epoch or not page or page[0].offset != after + 1:
            self.abandon_replay()
            return False
        page.reverse()
        self._replay = page
        return True

    def abandon_replay(self) -> None:
        """Stop the replay where it is. Queued events are dropped with it (writing them
        would skip the rest of the replay); queued control frames stay, nothing new is
        accepted (the connection closes)."""
        self.closing = True
        self._replay, self._paging, self.page_wanted, self._replay_until = None, False, None, 0
        self._page_asked = False
        for item in self.outbox.drain():
            if item.offset is None and item.replay is None:
                self.outbox.push(item)

    # -- offering -------------------------------------------------------------------------

    def offer(self, event: Any, clock: Clock, writable: bool) -> int:
        """A live event (``offset``, ``data``, ``conflation_key``, ``published_at``)."""
        if self.held_back is not None:
            self.held_back.append(event)
            return HELD
        if event.offset <= self.last_queued or self.closing:
            return DROPPED
        self.last_queued = event.offset
        if (event.conflation_key is None and writable and not self.outbox.items and not self._replay
                and not self._paging and self._burst(event.data, clock)):
            # Nothing is queued, so this offset is the next on the wire.
            self.last_sent = event.offset
            return WRITE
        within = self.outbox.push(Outgoing(event.data, offset=event.offset, conflation_key=event.conflation_key,
                                           published_at=event.published_at))
        if within and self._burst_bytes and self._burst_at == clock():
            # This tick's frames written at once would still be queued: count them.
            within = self.outbox.bytes + self._burst_bytes <= self.max_bytes
        return QUEUED if within else OVERFLOW

    def offer_control(self, text: str, clock: Clock, writable: bool) -> int:
        """A control frame (welcome, pong, error, ...): never dropped, always in order."""
        if writable and not self.outbox.items and not self._replay and not self._paging and self._burst(text, clock):
            return WRITE
        self.outbox.push(Outgoing(text))
        return QUEUED

    def _burst(self, text: str, clock: Clock) -> bool:
        tick = clock()
        if tick != self._burst_at:
            self._burst_at, self._burst_bytes = tick, 0
        burst = self._burst_bytes + len(text)
        if burst > self.max_bytes:
            return False
        self._burst_bytes = burst
        return True

    # -- draining -------------------------------------------------------------------------

    def next_item(self) -> tuple[str, float | None] | None:
        """The next text to write from the queue and when it was published (``None``: not a
        timed live event), with the offset filter applied; ``None`` when nothing is queued."""
        while True:
            replay = self._replay
            if replay:
                event = replay.pop()
                if event.offset > self.last_sent:
                    self.last_sent = event.offset
                    self.replayed += 1
                    return event.data, None
                continue
            if self._paging:
                if self.last_sent < self._replay_until:
                    if not self._page_asked:
                        self.page_wanted = self.last_sent  # the page is on the wire: ask for the next
                    return None
                self._paging = False
            item = self.outbox.pop()
            if item is None:
                self._replay = None
                return None
            if item.replay is not None:
                self._replay = list(reversed(item.replay))
                self._paging = True
                continue
            if item.offset is not None:
                if item.offset <= self.last_sent:
                    continue
                self.last_sent = item.offset
                return item.frame(), item.published_at
            return item.data, None

    @property
    def idle(self) -> bool:
        """Nothing queued (the close frame may go)."""
        return not self.outbox.items and not self._replay and not self._paging

    def close(self, *, flush: bool) -> None:
        """Accept nothing more; without ``flush`` drop what is queued."""
        self.closing = True
        if not flush:
            while self.outbox.pop() is not None:
                pass
            self._replay = None
        if self._paging or any(item.replay is not None for item in self.outbox.items.values()):
            self.abandon_replay()  # no page is read while closing


__all__ = ["DROPPED", "HELD", "OVERFLOW", "QUEUED", "WRITE", "Clock", "Delivery", "Fresh", "Replay"]
