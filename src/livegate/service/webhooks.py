"""Webhook deliveries of generation lifecycle events (openapi.yaml ``webhooks.generationEvent``,
``listGenerationWebhooks``; ``CreateGenerationRequest.webhookUrl``).

At least once, from any process:

1. A lifecycle transition that an endpoint wants (``plan``) inserts its delivery rows in
   the *same* transaction as the transition (``Store.transition(..., deliveries=...)``):
   a recorded status is never without its webhooks, whichever process dies when.
2. Every process runs a sweeper that claims due ``pending`` rows with a lease
   (``Store.claim_deliveries``; lease = the attempt's time bound plus a margin), makes the
   attempt (:class:`livegate.webhooks.sender.Sender`: signed, SSRF-checked, bounded) and
   records it fenced by the lease (``Store.finish_attempt``): ``delivered`` on a 2xx, else
   ``pending`` again at the next backoff time, or ``failed`` once the retries are spent or
   the URL is refused. A process that dies mid-attempt leaves a lease that expires; another
   process retries the row with the same ``webhook-id``.
3. The process that inserted rows wakes its sweeper at once, so the first attempt does not
   wait for the poll interval (``LIVEGATE_WEBHOOK_POLL_SECONDS``, the bound for the rest).

The body is rendered at each attempt: ``type`` and ``timestamp`` are the event's, ``data``
the generation as ``GET`` returns it then (fresh signed output URLs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from livegate.errors import LivegateError, StoreUnavailable
from livegate.protocol import http
from livegate.store import DeliveryRow, GenerationRow, Store
from livegate.webhooks.policy import (
    FINAL_EVENTS,
    GENERATION_ENDPOINT,
    AllowList,
    Endpoint,
    RetryPolicy,
    delivery_id,
    event_type,
    generation_endpoint,
    load_endpoints,
)
from livegate.webhooks.sender import Refused, Sender

__all__ = ["WebhookRefused", "WebhookService", "WebhooksDisabled"]

log = logging.getLogger("livegate.webhooks")
Describe = Callable[[GenerationRow], Awaitable[http.Generation]]
_UNSET = msgspec.UNSET


class WebhooksDisabled(LivegateError):
    code = "webhooks_disabled"


class WebhookRefused(LivegateError):
    code = "webhook_url_refused"


def _ts(value: float | None) -> Any:
    return _UNSET if value is None else datetime.fromtimestamp(value, UTC)


class WebhookService:
    """Plans, runs and describes deliveries (see the module docstring)."""

    def __init__(self, store: Store, sender: Sender, *, endpoints: tuple[Endpoint, ...] = (),
                 generation_secret: str | None = None, per_generation: bool = False,
                 retry: RetryPolicy | None = None, poll_seconds: float = 1.0, concurrency: int = 16,
                 owner: str = "livegate") -> None:
        self.store = store
        self.sender = sender
        self.endpoints = {e.name: e for e in endpoints}
        self.generation = generation_endpoint(generation_secret)
        self.per_generation = per_generation and self.generation is not None
        self.retry = retry or RetryPolicy()
        self.poll_seconds = poll_seconds
        self.concurrency = concurrency
        self.owner = owner
        # an attempt is bounded by the sender's total timeout: a lease twice that (plus a
        # margin) is never shorter than a live attempt, and expires soon after a dead one
        self.lease_seconds = 2 * sender.timeout + 5.0
        self.describe: Describe | None = None
        self._wake = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None
        self._attempts: set[asyncio.Task[None]] = set()
        self._in_flight: dict[str, DeliveryRow] = {}  # leased by this process, attempt not recorded

    @classmethod
    def from_config(cls, config: Any, store: Store, owner: str) -> WebhookService:
        sender = Sender(AllowList.parse(config.webhook_allow), connect_timeout=config.webhook_connect_timeout_seconds,
                        timeout=config.webhook_timeout_seconds, max_response_bytes=config.webhook_max_response_bytes)
        retry = RetryPolicy(base_seconds=config.webhook_backoff_base_seconds, factor=config.webhook_backoff_factor,
                            max_delay_seconds=config.webhook_backoff_max_seconds,
                            max_attempts=config.webhook_max_attempts,
                            period_seconds=config.webhook_retry_period_seconds)
        return cls(store, sender, endpoints=load_endpoints(config.webhooks), generation_secret=config.webhook_secret,
                   per_generation=config.webhook_per_generation, retry=retry, poll_seconds=config.webhook_poll_seconds,
                   concurrency=config.webhook_concurrency, owner=owner)

    # -- create -------------------------------------------------------------------------

    async def check_request(self, url: str, events: list[str] | None) -> list[str]:
        """A create's ``webhookUrl``: allowed here and callable (else the error to answer);
        the statuses it gets."""
        if not self.per_generation:
            raise WebhooksDisabled("This deployment does not accept a webhookUrl per generation")
        try:
            await self.sender.check(url)
        except Refused as exc:
            raise WebhookRefused(f"webhookUrl is refused: {exc}") from None
        return sorted(set(events or FINAL_EVENTS), key=("queued", "running", *FINAL_EVENTS).index)

    # -- planning (pure) ----------------------------------------------------------------

    def plan(self, row: GenerationRow, status: str, now: float) -> list[DeliveryRow]:
        """The deliveries of ``row`` reaching ``status``: one per endpoint that wants it."""
        planned = [DeliveryRow(id=delivery_id(row.id, status, e.name), generation_id=row.id, event=status,
                               endpoint=e.name, created_at=now, next_attempt_at=now)
                   for e in self.endpoints.values() if e.wants(status)]
        if row.webhook_url and status in (row.webhook_events or ()):
            planned.append(DeliveryRow(id=delivery_id(row.id, status, GENERATION_ENDPOINT), generation_id=row.id,
                                       event=status, endpoint=GENERATION_ENDPOINT, url=row.webhook_url,
                                       created_at=now, next_attempt_at=now))
        return planned

    def wake(self) -> None:
        """Rows were inserted: attempt them now rather than at the next poll."""
        self._wake.set()

    # -- the sweeper --------------------------------------------------------------------

    def start(self, describe: Describe) -> None:
        self.describe = describe
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="livegate-webhooks")

    async def stop(self) -> None:
        """Stop claiming and abandon attempts in flight, releasing their leases: another
        process (or the next start) makes them again at once, with the same ``webhook-id``
        (the receiver may have seen the abandoned one: at least once)."""
        tasks = [t for t in (self._sweeper, *self._attempts) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._sweeper = None
        for row in list(self._in_flight.values()):
            with contextlib.suppress(Exception):  # else the lease simply expires
                await self.store.finish_attempt(row.id, self.owner)
        self._in_flight.clear()
        await self.sender.aclose()

    async def _sweep_forever(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.sweep()
            except StoreUnavailable as exc:
                log.warning("webhook sweep postponed: %s", exc.message)
            except Exception:
                log.exception("webhook sweep failed")
            with contextlib.suppress(TimeoutError):
                # woken at once by a local insert; else the poll period bounds the wait
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)

    async def sweep(self, now: float | None = None) -> int:
        """Claim what is due (up to the free attempt slots) and start attempts."""
        free = self.concurrency - len(self._attempts)
        if free <= 0:
            return 0
        now = time.time() if now is None else now
        claimed = await self.store.claim_deliveries(now, self.owner, now + self.lease_seconds, free)
        for row in claimed:
            self._in_flight[row.id] = row
            task = asyncio.create_task(self._attempt(row), name=f"webhook-{row.id}")
            self._attempts.add(task)
            task.add_done_callback(self._attempt_done)
        return len(claimed)

    def _attempt_done(self, task: asyncio.Task[None]) -> None:
        self._attempts.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook attempt crashed", exc_info=task.exception())
        self._wake.set()  # a slot is free: claim more if some are due

    async def _attempt(self, row: DeliveryRow) -> None:
        try:
            await self._attempt_once(row)
        except Exception:
            self._in_flight.pop(row.id, None)  # (not on cancel: stop() releases those leases)
            raise  # logged by _attempt_done; the lease expires and the row is tried again

    async def _attempt_once(self, row: DeliveryRow) -> None:
        endpoint = self.generation if row.endpoint == GENERATION_ENDPOINT else self.endpoints.get(row.endpoint)
        url = row.url if row.endpoint == GENERATION_ENDPOINT else (endpoint.url if endpoint else None)
        generation = await self.store.get(row.generation_id)
        now = time.time()
        if endpoint is None or url is None:
            await self._record(row, now, ok=False, error=f"the endpoint {row.endpoint!r} is no longer configured",
                               permanent=True)
            return
        if generation is None or self.describe is None:
            await self._record(row, now, ok=False, error="the generation no longer exists", permanent=True)
            return
        event = http.WebhookEvent(type=event_type(row.event), timestamp=datetime.fromtimestamp(row.created_at, UTC),  # type: ignore[arg-type]
                                  data=await self.describe(generation))
        outcome = await self.sender.send(url, endpoint.secret, row.id, msgspec.json.encode(event))
        await self._record(row, time.time(), ok=outcome.ok, error=outcome.error, permanent=outcome.permanent,
                           status_code=outcome.status_code)

    async def _record(self, row: DeliveryRow, now: float, *, ok: bool, error: str | None = None,
                      permanent: bool = False, status_code: int | None = None) -> None:
        attempts = row.attempts + 1
        fields: dict[str, Any] = {"attempts": attempts, "last_attempt_at": now, "last_error": error,
                                  "last_status_code": status_code}
        if ok:
            fields.update(status="delivered", delivered_at=now, next_attempt_at=None)
        else:
            due = None if permanent else self.retry.next_attempt_at(row.created_at, now, attempts)
            fields.update(status="pending" if due is not None else "failed", next_attempt_at=due)
            log.log(logging.INFO if due is not None else logging.WARNING, "webhook attempt failed: %s", error,
                    extra={"generation_id": row.generation_id, "webhook_id": row.id, "endpoint": row.endpoint,
                           "attempt": attempts, "gave_up": due is None})
        self._in_flight.pop(row.id, None)
        try:
            if not await self.store.finish_attempt(row.id, self.owner, **fields):
                log.warning("webhook lease lost before the attempt was recorded", extra={"webhook_id": row.id})
        except StoreUnavailable as exc:
            # the lease expires and the attempt is made again (at least once, same id)
            log.warning("could not record a webhook attempt: %s", exc.message, extra={"webhook_id": row.id})

    # -- describe -----------------------------------------------------------------------

    async def list_for(self, generation_id: str) -> http.WebhookDeliveryList:
        rows = await self.store.deliveries(generation_id)
        return http.WebhookDeliveryList(deliveries=[
            http.WebhookDelivery(
                id=r.id, event=event_type(r.event), endpoint=r.endpoint, status=r.status,  # type: ignore[arg-type]
                attempts=r.attempts, created_at=_ts(r.created_at), url=r.url if r.url else _UNSET,
                last_attempt_at=_ts(r.last_attempt_at),
                next_attempt_at=_ts(r.next_attempt_at) if r.status == "pending" else _UNSET,
                last_status_code=r.last_status_code if r.last_status_code is not None else _UNSET,
                last_error=r.last_error if r.last_error else _UNSET, delivered_at=_ts(r.delivered_at))
            for r in rows])
