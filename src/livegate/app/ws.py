"""The WebSocket pump for asyncapi.yaml's ``/v1/ws`` channel.

Up to two tasks per connection, both thin: the *reader* feeds frames into the sans-I/O
:class:`~livegate.protocol.session.Session` and the *writer* drains the bounded
:class:`~livegate.protocol.outbox.Outbox`. Decisions live in the protocol core; this
module only carries effects out.

The fast path: under livegate's own uvicorn protocol (server.py) the scope carries the
``livegate.send_text`` extension, a synchronous "frame and write this now". When nothing is
queued or in the writer's hands and the transport is under its high-water mark, a frame is
written at once from where it is made (the bus listener, the session's effects), as
``websockets.broadcast`` does, instead of waking the writer and going through the ASGI
``send`` layers. Everything else (a paused transport, a backlog, a replay, the close) goes
through the outbox and the writer, which is made on first need: an idle connection has none.
The queued path's semantics hold: events with a conflation key are always queued (so a burst
of them conflates as before), and the bytes written at once in one loop iteration count
against the outbox's bound as if they had been queued (a burst over the bound is 4001).

Resume without a seam: subscribe first (live events are held back), read history after
the asked offset, send ``welcome``, replay, then release the held-back live events with
offset above the read's top. Every offset reaches the writer at most once and in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from litestar import WebSocket
from litestar.exceptions import WebSocketDisconnect
from litestar.types import WebSocketSendEvent

from livegate.bus import StreamEvent, Subscription
from livegate.errors import BusError
from livegate.protocol import codec, messages
from livegate.protocol.codes import CLOSE_CODES, FATAL_CLOSE
from livegate.protocol.outbox import Outbox, Outgoing
from livegate.protocol.resume import Fresh, Replay, plan_resume
from livegate.protocol.session import Authenticate, Close, Effect, Send, Session

if TYPE_CHECKING:
    from livegate.app.gateway import Gateway

log = logging.getLogger("livegate.ws")


#: The ASGI scope extension that server.py's protocol sets: ``{"send": Callable[[str], bool]}``.
SEND_TEXT_EXTENSION = "livegate.send_text"


class LoopIterations:
    """Counts event-loop iterations, lazily: reading :meth:`current` schedules one callback
    that advances it, so only iterations in which someone asked cost anything (one handle
    per publish batch, not one per recipient). The fast path's burst accounting uses it:
    the queued path's writer drained its queue only in a later iteration."""

    __slots__ = ("_loop", "_pending", "value")

    def __init__(self) -> None:
        self.value = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending = False

    def current(self) -> int:
        loop = asyncio.get_running_loop()
        if not self._pending or loop is not self._loop:  # a new loop never runs the old one's callback
            self._pending, self._loop = True, loop
            loop.call_soon(self._advance)
        return self.value

    def _advance(self) -> None:
        self.value += 1
        self._pending = False


def _text_frame(text: str) -> WebSocketSendEvent:
    return {"type": "websocket.send", "text": text, "bytes": None}


class Connection:
    __slots__ = (
        "_burst_at",
        "_burst_bytes",
        "_close",
        "_deliveries",
        "_held_back",
        "_iterations",
        "_last_queued",
        "_last_sent",
        "_metrics",
        "_registered_user",
        "_send",
        "_send_now",
        "_subscription",
        "_timer",
        "_timer_off",
        "_writer",
        "_writer_waiting",
        "_written_at_once",
        "gw",
        "id",
        "outbox",
        "session",
        "socket",
    )

    def __init__(self, socket: WebSocket[Any, Any, Any], gateway: Gateway) -> None:
        self.socket = socket
        self.gw = gateway
        self.id = "c-" + secrets.token_hex(6)
        self.session = Session(gateway.verifier, gateway.limits, self.id, now=time.time())
        self.outbox = Outbox(gateway.config.queue_max_bytes)
        self._writer: asyncio.Task[None] | None = None  # made when a frame must wait (_wake_writer)
        # The idle writer's wake-up: a bare future made only while it waits (an Event holds
        # a deque, ~600 bytes per connection, measured in bench/README.md).
        self._writer_waiting: asyncio.Future[None] | None = None
        self._written_at_once = 0  # frames the writer wrote through the synchronous send (_write)
        self._timer: asyncio.TimerHandle | None = None  # the session's next deadline, on the loop
        self._timer_off = False  # the connection ended: never re-arm
        self._close: Close | None = None
        self._subscription: Subscription | None = None
        self._held_back: list[StreamEvent] | None = None
        self._last_queued = 0  # highest stream offset handed to the outbox
        self._last_sent = 0  # highest stream offset written to the socket
        self._registered_user: str | None = None
        self._send = socket.send
        # The protocol's synchronous send, or None under other servers (then every frame takes
        # the writer and ASGI path, as before).
        extension = (socket.scope.get("extensions") or {}).get(SEND_TEXT_EXTENSION)
        self._send_now = cast("Callable[[str], bool]", extension["send"]) if extension else None
        self._iterations = gateway.loop_iterations
        self._burst_at = -1  # the loop iteration of the frames written at once, and their size
        self._burst_bytes = 0
        self._metrics = gateway.metrics
        self._deliveries = gateway.metrics.deliveries

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        await self.socket.accept()
        self.gw.add_connection(self)
        self._rearm_timer()
        try:
            origin_error = self._origin_error()
            if origin_error:
                self._apply_sync(self.session.fail("origin_not_allowed", origin_error))
            else:
                await self._reader()
        except WebSocketDisconnect:
            pass
        finally:
            self._timer_off = True
            if self._timer is not None:
                self._timer.cancel()
            await self._leave_stream()
            writer = self._writer  # a close always has one (_wake_writer)
            if writer is not None:
                if self._close is not None:
                    # Let the writer flush what is queued and send the close, within bounds.
                    with contextlib.suppress(asyncio.TimeoutError, Exception):
                        await asyncio.wait_for(asyncio.shield(writer), self.gw.config.shutdown_grace_seconds)
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await writer
            self.gw.remove_connection(self)

    def _origin_error(self) -> str | None:
        allowed = self.gw.config.allowed_origins
        if not allowed:
            return None
        origin = self.socket.headers.get("origin")
        if origin in allowed:
            return None
        return f"Origin {origin!r} is not allowed"

    def request_close(self, code: str, message: str, *, flush: bool) -> None:
        """Server-side close (shutdown, slow consumer): ``error`` + close with ``code``."""
        if self._close is not None:
            return
        if not flush:
            while self.outbox.pop() is not None:
                pass
        self._apply_sync(self.session.fail(code, message))

    # -- reader ---------------------------------------------------------------------------

    async def _reader(self) -> None:
        receive = self.socket.receive
        while self._close is None:
            event = await receive()
            if event["type"] != "websocket.receive":
                return
            text = event.get("text")
            now = time.time()
            if text is not None:
                effects = self.session.receive_text(text, now)
            else:
                effects = self.session.receive_binary(len(event.get("bytes") or b""), now)
            if effects:
                await self._apply(effects)

    async def _apply(self, effects: Iterable[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Authenticate):
                await self._join_stream(effect)
            else:
                self._apply_sync([effect])

    def _apply_sync(self, effects: Iterable[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                message = effect.message
                if isinstance(message, messages.Error):
                    self._metrics.frames_refused.labels(message.code).inc()
                    if message.code in FATAL_CLOSE and message.code.startswith("token_"):
                        self._metrics.auth_failures.labels(message.code).inc()
                text = codec.encode_text(message)
                if not self._sent_now(text):
                    self.outbox.push(Outgoing(text))
            elif isinstance(effect, Close):
                self._close = effect
                self._metrics.closes.labels(str(effect.code)).inc()
        self._rearm_timer()
        self._wake_writer()

    # -- the stream -----------------------------------------------------------------------

    async def _join_stream(self, auth: Authenticate) -> None:
        user = auth.claims.sub
        if not self.gw.hub.register(user, self):
            if self.gw.hub.accepting:
                self._apply_sync(self.session.fail("too_many_connections",
                                                   f"At most {self.gw.hub.max_per_user} connections per user"))
            else:
                self._apply_sync(self.session.fail("server_restart", "The server is shutting down"))
            return
        self._registered_user = user
        self._held_back = []
        try:
            self._subscription = await self.gw.bus.subscribe(user, self._on_event)
            resume = auth.resume
            read = await self.gw.bus.read(user, resume.offset if resume else None)
        except BusError as exc:
            log.warning("bus unavailable while joining", extra={"connection_id": self.id, "user_id": user})
            self._apply_sync(self.session.fail("unavailable", f"Cannot read the stream now: {exc.message}"))
            return
        if self._close is not None:
            return  # closed while joining (shutdown, stream reset): no welcome
        plan = plan_resume(resume.epoch if resume else None, resume.offset if resume else None,
                           epoch=read.epoch, first_available=read.first_available, top=read.top)
        recovered = None if isinstance(plan, Fresh) else isinstance(plan, Replay)
        if recovered is not None:
            self._metrics.resumes.labels("recovered" if recovered else "not_recovered").inc()
        self._apply_sync(self.session.accept(epoch=read.epoch, offset=read.top, recovered=recovered,
                                             request_id=auth.request_id))
        if isinstance(plan, Replay) and read.events:
            self.outbox.push(Outgoing("", replay=read.events))
            self._wake_writer()  # the welcome may have gone out at once: nothing else wakes it
        self._last_queued = read.top
        self._last_sent = plan.after if isinstance(plan, Replay) else read.top
        held, self._held_back = self._held_back, None
        for event in held:
            self._on_event(event)
        self._metrics.connections.inc()
        self._metrics.connections_total.inc()
        log.info("connection authenticated", extra={"connection_id": self.id, "user_id": user,
                                                    "resume": type(plan).__name__})

    def _on_event(self, event: StreamEvent) -> None:
        """Bus listener: must not block. Filters the resume seam, then queues."""
        if self._held_back is not None:
            self._held_back.append(event)
            return
        if event.offset <= self._last_queued or self._close is not None:
            return
        self._last_queued = event.offset
        if event.conflation_key is None and self._sent_now(event.data):
            # Nothing was queued or in the writer's hands, so this offset is the next on the
            # wire (above _last_sent, which is at most the _last_queued before it).
            self._last_sent = event.offset
            self._deliveries.record(event.published_at)
            return
        within_bound = self.outbox.push(Outgoing(event.data, offset=event.offset,
                                                 conflation_key=event.conflation_key,
                                                 published_at=event.published_at))
        if within_bound and self._burst_bytes and self._burst_at == self._iterations.value:
            # This iteration's frames written at once would still be in the queue: count them.
            within_bound = self.outbox.bytes + self._burst_bytes <= self.outbox.max_bytes
        if not within_bound:
            self._metrics.slow_consumer_closes.inc()
            log.warning("slow consumer", extra={"connection_id": self.id, "user_id": self._registered_user,
                                                "queued_bytes": self.outbox.bytes})
            self.request_close("slow_consumer", "Outbound queue overflow; reconnect and resume", flush=False)
            return
        self._wake_writer()

    async def _leave_stream(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.close()
            self._subscription = None
        if self._registered_user is not None:
            self.gw.hub.unregister(self._registered_user, self)
            self._metrics.connections.dec()
            self._registered_user = None

    # -- writer and timer -----------------------------------------------------------------

    def _sent_now(self, text: str) -> bool:
        """Write ``text`` at once through the protocol's synchronous send, when that keeps the
        order and the bounds of the queued path: no close decided, nothing queued, the writer
        absent or parked (not holding a popped item or a replay), this iteration's burst within
        the outbox's bound, and the protocol able to write without waiting (it says no while the
        transport is over its high-water mark, where the queued path would wait too; the outbox
        then fills and bounds as before)."""
        send_now = self._send_now
        if (send_now is None or self._close is not None or self.outbox.items
                or (self._writer is not None and self._writer_waiting is None)):
            return False
        iteration = self._iterations.current()
        if iteration != self._burst_at:
            self._burst_at, self._burst_bytes = iteration, 0
        burst = self._burst_bytes + len(text)
        if burst > self.outbox.max_bytes or not send_now(text):
            return False  # queued instead; over the bound, the push reports the overflow
        self._burst_bytes = burst
        return True

    async def _write_loop(self) -> None:
        outbox = self.outbox
        deliveries = self._deliveries
        write = self._write
        conflated_seen = 0
        while True:
            item = outbox.pop()
            if item is None:
                if outbox.conflated != conflated_seen:
                    self._metrics.events_conflated.inc(outbox.conflated - conflated_seen)
                    conflated_seen = outbox.conflated
                if self._close is not None:
                    await self._send_close(self._close)
                    return
                self._writer_waiting = asyncio.get_running_loop().create_future()
                try:
                    await self._writer_waiting
                finally:
                    self._writer_waiting = None
                continue
            if item.replay is not None:
                replayed = 0
                for event in item.replay:
                    if event.offset > self._last_sent:
                        await write(event.data)
                        self._last_sent = event.offset
                        replayed += 1
                deliveries.record_untimed(replayed)
                continue
            if item.offset is not None:
                if item.offset <= self._last_sent:
                    continue
                self._last_sent = item.offset
                await write(item.frame())
                deliveries.record(item.published_at)
            else:
                await write(item.data)

    async def _write(self, text: str) -> None:
        """The writer's send of one frame: at once through the protocol's synchronous send when
        it can take it (the writer holds the connection's order: nothing else writes while it
        holds an item), else through ASGI ``send``, which waits while the transport is paused.
        Every 64 frames written at once it yields, so a long replay to a fast reader does not
        hold the loop."""
        send_now = self._send_now
        if send_now is not None and send_now(text):
            self._written_at_once += 1
            if self._written_at_once % 64 == 0:
                await asyncio.sleep(0)
            return
        await self._send(_text_frame(text))

    def _wake_writer(self) -> None:
        if self._writer is None:
            if not self.outbox.items and self._close is None:
                return  # nothing to wait for: stay without a writer
            self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer-{self.id}")
            return
        waiting = self._writer_waiting
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    async def _send_close(self, close: Close) -> None:
        with contextlib.suppress(Exception):
            await self.socket.close(code=close.code, reason=close.reason)

    def _rearm_timer(self) -> None:
        """Schedule :meth:`_on_timer` at the session's next deadline (a loop timer, not a
        task per connection); called after every batch of effects."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = None if self._close is not None or self._timer_off else self.session.next_deadline()
        if deadline is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(loop.time() + max(0.0, deadline - time.time()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        effects = self.session.on_timer(time.time())
        if effects:
            self._apply_sync(effects)  # re-arms; a close stops the timer and the writer winds down
        else:
            self._rearm_timer()


async def serve_websocket(socket: WebSocket[Any, Any, Any], gateway: Gateway) -> None:
    """``/v1/ws`` (asyncapi.yaml channel ``userStream``)."""
    await Connection(socket, gateway).run()


__all__ = ["CLOSE_CODES", "Connection", "serve_websocket"]
