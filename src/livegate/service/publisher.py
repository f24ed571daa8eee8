"""The one publish path: in-process callers and ``POST /v1/events`` both end here.

Turns the contract's publish inputs (``GenerationUpdateInput``, ``GenerationProgressInput``,
``NotificationInput`` of openapi.yaml) into bus items: encoded once, stamped with the
server ``timestamp``; the bus adds ``epoch`` and ``offset``. ``generationProgress`` events
carry their generation id as conflation key (asyncapi.yaml, "Conflation").

No event larger than ``max_event_bytes`` (``LIVEGATE_MAX_EVENT_BYTES``, encoded, before the
bus adds its ~60 bytes of position) reaches a stream: a publish holding one raises
:class:`~livegate.errors.EventTooLarge` before anything is appended. One huge event would
otherwise overflow every reader's queue (4001) and be replayed to them again on resume,
past the frame limit of common clients (websockets' is 1 MiB).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec

from livegate.bus import Bus, Position, PublishItem
from livegate.errors import BusUnavailable, EventTooLarge
from livegate.metrics import Metrics
from livegate.protocol import http

StreamEventInput = http.GenerationUpdateInput | http.GenerationProgressInput | http.NotificationInput

#: ``LIVEGATE_MAX_EVENT_BYTES``' default: 256 KiB.
DEFAULT_MAX_EVENT_BYTES = 256 * 1024

_encoder = msgspec.json.Encoder()


def utc_timestamp(now: datetime | None = None) -> str:
    moment = now or datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def timestamp_prefix(timestamp: str) -> bytes:
    """The start of every body of one publish: ``{"timestamp":"...",``."""
    return b'{"timestamp":"' + timestamp.encode() + b'",'


def to_bus_item(user_id: str, event: StreamEventInput, prefix: bytes) -> PublishItem:
    """``prefix`` is :func:`timestamp_prefix` of the publish (made once per batch)."""
    key = event.generation_id if type(event) is http.GenerationProgressInput else None
    return PublishItem(user_id, prefix + _encoder.encode(event)[1:], key)


class Publisher:
    def __init__(self, bus: Bus, metrics: Metrics, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.bus = bus
        self.metrics = metrics
        self.max_event_bytes = max_event_bytes

    def encoded_size(self, event: StreamEventInput) -> int:
        """The size :meth:`publish` checks against ``max_event_bytes`` (the timestamp aside)."""
        return len(_encoder.encode(event))

    async def publish(self, events: Sequence[tuple[str, StreamEventInput]]) -> list[Position]:
        """Append events (``(user_id, event)`` pairs) in order; raise ``BusUnavailable``
        (with the positions of those appended before the failure) when the bus is down."""
        prefix = timestamp_prefix(utc_timestamp())
        items = [to_bus_item(user_id, event, prefix) for user_id, event in events]
        limit = self.max_event_bytes
        sizes = {i: len(item.body) for i, item in enumerate(items) if len(item.body) > limit}
        if sizes:
            raise EventTooLarge(f"{len(sizes)} of {len(items)} events are larger than {limit} bytes; "
                                "nothing was published", sizes=sizes, limit=limit)
        try:
            positions = await self.bus.publish(items)
        except BusUnavailable as exc:
            self.metrics.publish_failures.inc()
            self._count(events[: len(exc.published)])
            raise
        self._count(events)
        return positions

    async def publish_one(self, user_id: str, event: StreamEventInput) -> Position:
        return (await self.publish([(user_id, event)]))[0]

    def _count(self, events: Sequence[tuple[str, StreamEventInput]]) -> None:
        # One labelled increment per type and batch, not per event (labels() costs ~1 us).
        for tag, count in Counter(event.__struct_config__.tag for _, event in events).items():
            self.metrics.events_published.labels(tag).inc(count)
