"""The endpoint of asyncapi.yaml's ``/v1/ws`` channel (and of ``sseStream``, the same stream
over Server-Sent Events): one :class:`Connection` per socket or event stream.

It is written against :class:`livegate.transport.wire.Wire` (write a text, bytes not yet
written, close with a code, a drain callback) and does not know which transport carries it
(:mod:`livegate.transport.native`, :mod:`livegate.transport.asgi` or
:mod:`livegate.transport.sse`, whose connections are authenticated by their request and whose
client messages arrive by POST, :mod:`livegate.app.sse`). It is a pump: frames and
the clock go into the sans-I/O :class:`~livegate.protocol.session.Session`; stream events and
control frames go through :class:`~livegate.protocol.delivery.Delivery`, which decides the
resume seam, the offset filter, the replay, write-now-or-queue and the slow-consumer close;
this module carries the decisions out (writes, the flush callback, timers, the bus).

No task per connection: the transport calls in, the bus listener writes at once when the
core says so, a queued frame is flushed by one loop callback (so a burst of conflatable
events conflates), and the flush stops while the wire is not writable and resumes when it
is drained. Only the join (subscribe + read, which await the bus) and the leave run as tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from livegate.bus import StreamEvent, Subscription
from livegate.errors import BusError, IllegalTransition, NotFound, StoreUnavailable
from livegate.protocol import codec, messages
from livegate.protocol.auth import Claims
from livegate.protocol.codes import CLOSE_CODES, FATAL_CLOSE
from livegate.protocol.delivery import OVERFLOW, QUEUED, WRITE, Delivery
from livegate.protocol.resume import Fresh, Replay
from livegate.protocol.session import Authenticate, CancelGeneration, Close, Effect, Session
from livegate.protocol.textdelta import LegacyText
from livegate.transport.wire import Wire

if TYPE_CHECKING:
    from livegate.app.gateway import Gateway

log = logging.getLogger("livegate.ws")

#: Frames received while the connection joins its stream wait for the join (as a reader
#: that awaited the join would have read them after it); more than this are dropped.
MAX_FRAMES_WHILE_JOINING = 64
#: Frames one flush callback writes before it gives the loop a turn (a long replay to a fast
#: reader must not hold the loop).
FRAMES_PER_FLUSH = 256
#: Seconds before the prefix of a legacy connection's generation is asked for again.
PREFIX_RETRY_SECONDS = 0.5


class Connection:
    """One WebSocket session (hub member): carries the session's and the core's decisions
    out to its :class:`~livegate.transport.wire.Wire`. Implements
    :class:`~livegate.transport.wire.Endpoint`."""

    __slots__ = (
        "_admit",
        "_cancels",
        "_clock",
        "_close",
        "_close_sent",
        "_conflated_seen",
        "_counted",
        "_deliveries",
        "_flush_scheduled",
        "_joining",
        "_legacy_text",
        "_lost",
        "_metrics",
        "_origin",
        "_registered_user",
        "_replayed_seen",
        "_subscription",
        "_text_fetches",
        "_timer",
        "_unauthenticated",
        "delivery",
        "gw",
        "id",
        "session",
        "wire",
    )

    def __init__(self, wire: Wire, gateway: Gateway, *, origin: str | None, connection_id: str | None = None,
                 admit: tuple[Claims, messages.StreamPosition | None, bool] | None = None) -> None:
        """``admit``: the wire authenticated the connection with its request (SSE: a ticket
        or a Bearer JWT, and ``Last-Event-ID``); it joins its stream on :meth:`open` as
        after an ``auth`` with these claims and resume position."""
        self.wire = wire
        self.gw = gateway
        self.id = connection_id or "c-" + secrets.token_hex(6)
        self._admit = admit
        self.session = Session(gateway.verifier, gateway.limits, self.id, now=time.time())
        self.delivery = Delivery(gateway.config.queue_max_bytes)
        self._origin = origin
        self._clock = gateway.ticks.now  # shared: one bound method per gateway
        self._timer: asyncio.TimerHandle | None = None  # the session's next deadline, or the close's
        self._close: Close | None = None
        self._close_sent = False
        self._lost = False
        self._flush_scheduled = False
        self._joining: list[tuple[str | None, int]] | None = None  # frames that wait for the join
        self._subscription: Subscription | None = None
        # Set at the join unless the client asked for auth.textDeltas: its progress frames
        # get the deprecated partialText rebuilt from the deltas, at the point they are
        # written (after conflation merged them, in wire order).
        self._legacy_text: LegacyText | None = None
        self._text_fetches: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak references
        self._registered_user: str | None = None
        self._counted = False  # in the connections gauge (authenticated and welcomed)
        self._unauthenticated = False  # counted in gateway.unauthenticated
        self._conflated_seen = 0
        self._replayed_seen = 0
        self._cancels: set[asyncio.Task[None]] = set()  # in-band cancels being carried out
        self._metrics = gateway.metrics
        self._deliveries = gateway.metrics.deliveries

    # -- lifecycle ------------------------------------------------------------------------

    def open(self) -> None:
        """The handshake is done (the wire is open): start the session. Above
        ``LIVEGATE_MAX_UNAUTHENTICATED`` sessions still waiting for their ``auth``, closed at
        once with 1013 (asyncapi.yaml ``x-transport-close-codes``: reconnect with backoff)."""
        gw = self.gw
        gw.add_connection(self)
        if self._admit is None:  # (an SSE stream arrives authenticated by its request)
            if gw.unauthenticated >= gw.config.max_unauthenticated:
                self._metrics.closes.labels("1013").inc()
                self.wire.close(1013, "try again later")
                return
            gw.unauthenticated += 1
            self._unauthenticated = True
        allowed = self.gw.config.allowed_origins
        if allowed and self._origin not in allowed:
            self._apply(self.session.fail("origin_not_allowed", f"Origin {self._origin!r} is not allowed"))
        elif self._admit is not None:
            claims, resume, text_deltas = self._admit
            self._apply(self.session.admit(claims, resume, text_deltas=text_deltas))
        else:
            self._rearm_timer()

    def connection_lost(self) -> None:
        if self._lost:
            return
        self._lost = True
        self._authenticated()
        self._cancel_timer()
        self.delivery.close(flush=False)
        if self._subscription is None and self._registered_user is None:
            self.gw.remove_connection(self)
            return
        asyncio.get_running_loop().create_task(self._leave_stream(), name=f"ws-leave-{self.id}")

    def request_close(self, code: str, message: str, *, flush: bool) -> None:
        """Server-side close (shutdown, slow consumer): ``error`` + close with ``code``."""
        if self._close is not None or self._lost:
            return
        if not flush:
            self.delivery.close(flush=False)
        self._apply(self.session.fail(code, message))

    # -- inbound (Endpoint) ---------------------------------------------------------------

    def text_received(self, data: str) -> None:
        if self._joining is not None:
            if len(self._joining) < MAX_FRAMES_WHILE_JOINING:
                self._joining.append((data, 0))
            return
        effects = self.session.receive_text(data, time.time())
        if effects:
            self._apply(effects)

    def binary_received(self, size: int) -> None:
        if self._joining is not None:
            if len(self._joining) < MAX_FRAMES_WHILE_JOINING:
                self._joining.append((None, size))
            return
        effects = self.session.receive_binary(size, time.time())
        if effects:
            self._apply(effects)

    def drained(self) -> None:
        if not self._lost and not self.delivery.idle:
            self._flush()

    # -- effects --------------------------------------------------------------------------

    def _apply(self, effects: Iterable[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Authenticate):
                self._authenticated()
                self._joining = []
                asyncio.get_running_loop().create_task(self._join_stream(effect), name=f"ws-join-{self.id}")
            elif isinstance(effect, CancelGeneration):
                task = asyncio.get_running_loop().create_task(self._cancel(effect), name=f"ws-cancel-{self.id}")
                self._cancels.add(task)
                task.add_done_callback(self._cancels.discard)
            elif isinstance(effect, Close):
                self._close = effect
                self._metrics.closes.labels(str(effect.code)).inc()
                self.delivery.close(flush=True)
            else:
                message = effect.message
                if isinstance(message, messages.Error):
                    self._metrics.frames_refused.labels(message.code).inc()
                    if message.code in FATAL_CLOSE and message.code.startswith("token_"):
                        self._metrics.auth_failures.labels(message.code).inc()
                self._send_control(codec.encode_text(message))
        if self._close is not None:
            self._closing()
        else:
            self._rearm_timer()

    def _send_control(self, text: str) -> None:
        if self._lost:
            return
        wire = self.wire
        if self.delivery.offer_control(text, self._clock, wire.writable) == WRITE:
            wire.write(text)
        else:
            self._schedule_flush()

    def _closing(self) -> None:
        """A close was decided: flush what is queued (bounded by the shutdown grace), then
        the close frame."""
        self._cancel_timer()
        if self._lost or self._close_sent:
            return
        if self.delivery.idle:
            self._send_close()
        else:
            self._schedule_flush()
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.gw.config.shutdown_grace_seconds, self._close_now)

    def _close_now(self) -> None:
        self._timer = None
        self.delivery.close(flush=False)
        self._send_close()

    def _send_close(self) -> None:
        close = self._close
        if close is None or self._close_sent or self._lost:
            return
        self._close_sent = True
        self._cancel_timer()
        self.wire.close(close.code, close.reason)

    async def _cancel(self, request: CancelGeneration) -> None:
        """asyncapi.yaml ``sendCancel``: the HTTP cancel's semantics and codes
        (openapi.yaml ``cancelGeneration``), answered on this connection only; every tab
        sees the run's final ``generationUpdate`` on the stream."""
        service = self.gw.generations
        rid = request.request_id
        try:
            if service is None:
                raise StoreUnavailable("The generation service is starting")
            generation = await service.cancel(request.user_id, request.generation_id)
        except NotFound as exc:
            effects = self.session.cancel_refused(rid, "not_found", exc.message)
        except IllegalTransition as exc:
            effects = self.session.cancel_refused(rid, "illegal_transition", exc.message)
        except StoreUnavailable:
            effects = self.session.cancel_refused(rid, "database_unavailable",
                                                  "The database is unavailable; retry shortly")
        except Exception:
            log.exception("in-band cancel failed", extra={"connection_id": self.id})
            effects = self.session.cancel_refused(rid, "internal_error", "The cancel failed")
        else:
            effects = self.session.cancel_answered(rid, generation.id, generation.status)
        if effects and not self._lost and self._close is None:
            self._apply(effects)

    # -- the stream -----------------------------------------------------------------------

    def _authenticated(self) -> None:
        """Leave the unauthenticated count (a valid ``auth``, or the connection is gone)."""
        if self._unauthenticated:
            self._unauthenticated = False
            self.gw.unauthenticated -= 1

    async def _join_stream(self, auth: Authenticate) -> None:
        try:
            await self._join(auth)
        finally:
            waiting, self._joining = self._joining or [], None
            for data, size in waiting:
                if self._close is not None or self._lost:
                    break
                if data is not None:
                    self.text_received(data)
                else:
                    self.binary_received(size)

    async def _join(self, auth: Authenticate) -> None:
        user = auth.claims.sub
        hub = self.gw.hub
        if self._lost:
            return
        if not hub.register(user, self):
            if hub.accepting:
                self._apply(self.session.fail("too_many_connections", f"At most {hub.max_per_user} connections per user"))
            else:
                self._apply(self.session.fail("server_restart", "The server is shutting down"))
            return
        self._registered_user = user
        if not auth.text_deltas:
            self._legacy_text = LegacyText(self.gw.text_so_far)
        self.delivery.hold()
        resume = auth.resume
        # resume.timestamp: the event the client holds at its offset, checked by the bus
        stamp = resume.timestamp if resume is not None and isinstance(resume.timestamp, str) else None
        try:
            self._subscription = await self.gw.bus.subscribe(user, self._on_event)
            config = self.gw.config
            read = await self.gw.bus.read(user, resume.offset if resume else None,
                                          limit=config.replay_page_events, max_bytes=config.replay_page_bytes,
                                          claimed_epoch=resume.epoch if resume else None,
                                          claimed_timestamp=stamp)
        except BusError as exc:
            log.warning("bus unavailable while joining", extra={"connection_id": self.id, "user_id": user})
            self.delivery.held_back = None
            self._apply(self.session.fail("unavailable", f"Cannot read the stream now: {exc.message}"))
            return
        if self._lost and self._subscription is not None:
            # The peer left while the bus answered; the leave may have run already.
            subscription, self._subscription = self._subscription, None
            with contextlib.suppress(Exception):
                await subscription.close()
        if self._close is not None or self._lost:
            return  # closed while joining (shutdown, stream reset, peer gone): no welcome
        plan = self.delivery.start(resume.epoch if resume else None, resume.offset if resume else None,
                                   epoch=read.epoch, first_available=read.first_available, top=read.top)
        recovered = None if isinstance(plan, Fresh) else isinstance(plan, Replay)
        if recovered is not None:
            self._metrics.resumes.labels("recovered" if recovered else "not_recovered").inc()
        self._apply(self.session.accept(epoch=read.epoch, offset=read.top, recovered=recovered,
                                        request_id=auth.request_id))
        held = self.delivery.go_live(plan, read.events)
        if not self.delivery.idle:
            self._schedule_flush()  # the replay
        for event in held:
            self._on_event(event)
        self._metrics.connections.inc()
        self._counted = True
        self._metrics.connections_total.inc()
        log.info("connection authenticated", extra={"connection_id": self.id, "user_id": user,
                                                    "resume": type(plan).__name__})

    def _on_event(self, event: StreamEvent) -> None:
        """Bus listener: must not block."""
        wire = self.wire
        decision = self.delivery.offer(event, self._clock, wire.writable)
        if decision == WRITE:
            wire.write(event.data if self._legacy_text is None else self._legacy_frame(event.data))
            self._deliveries.record(event.published_at)
        elif decision == QUEUED:
            self._schedule_flush()
        elif decision == OVERFLOW:
            self._metrics.slow_consumer_closes.inc()
            log.warning("slow consumer", extra={"connection_id": self.id, "user_id": self._registered_user,
                                                "queued_bytes": self.delivery.outbox.bytes})
            self.request_close("slow_consumer", "Outbound queue overflow; reconnect and resume", flush=False)

    def _legacy_frame(self, data: str) -> str:
        """``data`` in the deprecated ``partialText`` form (a client without
        ``auth.textDeltas``); a generation joined mid-stream whose run is on another process
        gets its prefix fetched from the store (one fetch at a time per generation)."""
        legacy = self._legacy_text
        assert legacy is not None
        frame = legacy.frame(data)
        while legacy.wanted:
            gen_id = legacy.wanted.pop()
            task = asyncio.get_running_loop().create_task(self._fetch_prefix(legacy, gen_id), name=f"ws-text-{self.id}")
            self._text_fetches.add(task)
            task.add_done_callback(self._text_fetches.discard)
        return frame

    async def _fetch_prefix(self, legacy: LegacyText, gen_id: str) -> None:
        prefix = None
        generations = self.gw.generations
        with contextlib.suppress(Exception):  # best effort: the final update carries the text
            prefix = await generations.saved_text(gen_id) if generations is not None else None
        if not legacy.seed(gen_id, prefix):
            await asyncio.sleep(PREFIX_RETRY_SECONDS)  # the runner saves it about once a second
        legacy.ask_again(gen_id)

    async def _leave_stream(self) -> None:
        try:
            if self._subscription is not None:
                with contextlib.suppress(Exception):
                    await self._subscription.close()
                self._subscription = None
            if self._registered_user is not None:
                self.gw.hub.unregister(self._registered_user, self)
                self._registered_user = None
            if self._counted:
                self._metrics.connections.dec()
                self._counted = False
        finally:
            self.gw.remove_connection(self)

    # -- flush and timer ------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and not self._lost:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Write what is queued while the wire takes it; :meth:`drained` resumes it."""
        self._flush_scheduled = False
        if self._lost:
            return
        delivery, wire, deliveries, legacy = self.delivery, self.wire, self._deliveries, self._legacy_text
        written = 0
        while wire.writable:
            item = delivery.next_item()
            if item is None:
                break
            text, published_at = item
            wire.write(text if legacy is None else self._legacy_frame(text))
            if published_at is not None:
                deliveries.record(published_at)
            written += 1
            if written >= FRAMES_PER_FLUSH:
                self._schedule_flush()
                break
        if delivery.replayed != self._replayed_seen:
            deliveries.record_untimed(delivery.replayed - self._replayed_seen)
            self._replayed_seen = delivery.replayed
        conflated = delivery.outbox.conflated
        if conflated != self._conflated_seen:
            self._metrics.events_conflated.inc(conflated - self._conflated_seen)
            self._conflated_seen = conflated
        after = delivery.take_page_request()
        if after is not None:
            asyncio.get_running_loop().create_task(self._read_page(after), name=f"ws-page-{self.id}")
        if self._close is not None and delivery.idle:
            self._send_close()

    async def _read_page(self, after: int) -> None:
        """The replay's next page (the last one is on the wire): bounded like the first."""
        user, config = self._registered_user, self.gw.config
        ok = False
        if user is not None:
            try:
                read = await self.gw.bus.read(user, after, limit=config.replay_page_events,
                                              max_bytes=config.replay_page_bytes)
            except BusError:
                log.warning("bus unavailable during a replay", extra={"connection_id": self.id, "user_id": user})
            else:
                ok = self.delivery.add_page(read.epoch, read.events)
        if self._lost:
            return
        if ok:
            self._schedule_flush()
        else:
            # History moved on (trimmed, lost) or the bus failed mid-replay: what was sent is
            # exact; the client resumes from its last offset and is told what is gone.
            self.delivery.abandon_replay()
            self.request_close("unavailable", "The replay could not continue; reconnect and resume", flush=True)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _rearm_timer(self) -> None:
        """Schedule :meth:`_on_timer` at the session's next deadline (a loop timer, not a
        task per connection); called after every batch of effects."""
        self._cancel_timer()
        deadline = None if self._close is not None or self._lost else self.session.next_deadline()
        if deadline is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(loop.time() + max(0.0, deadline - time.time()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        effects = self.session.on_timer(time.time())
        if effects:
            self._apply(effects)
        else:
            self._rearm_timer()


__all__ = ["CLOSE_CODES", "Connection"]
