"""Prometheus metrics (prometheus-client), one registry per gateway instance."""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString


class _CountersCollector(Collector):
    """Exports a ``{kind: count}`` callable (the bus's :meth:`~livegate.bus.base.Bus.counters`)
    as one labelled counter, read at scrape time."""

    def __init__(self, name: str, documentation: str, read: Callable[[], dict[str, int]]) -> None:
        self._name, self._documentation, self._read = name, documentation, read

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=["kind"])
        for kind, value in sorted(self._read().items()):
            family.add_metric([kind], value)
        yield family


class DeliveryMeter(Collector):
    """The delivery path's two metrics, ``livegate_events_delivered_total`` (a counter) and
    ``livegate_publish_to_send_seconds`` (a histogram), exposed as prometheus-client's
    ``Counter`` and ``Histogram`` would be, recorded in one plain call per delivery.

    prometheus-client's ``Histogram.observe`` takes three locks and scans the buckets (~2 us
    per delivery, 12% of the server's CPU in bench/'s profile) and ``Counter.inc`` one lock;
    this is a bisect and three adds, for callers on the event loop's thread (the fan-out, and
    ``/metrics``, which runs on the loop)."""

    def __init__(self, *, buckets: Sequence[float], registry: CollectorRegistry,
                 clock: Callable[[], float] = time.time) -> None:
        self._created = time.time()
        self._clock = clock
        self._bounds = [float(b) for b in buckets]
        self._counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self.delivered = 0  # stream events written to connections
        self.latency_sum = 0.0
        registry.register(self)

    def record(self, published_at: float) -> None:
        """One event written now; ``published_at`` is when the bus accepted it (wall clock,
        0.0 when unknown: counted, not timed). A peer's clock ahead of ours counts as 0."""
        self.delivered += 1
        if published_at:
            lag = self._clock() - published_at
            if lag < 0.0:
                lag = 0.0
            self._counts[bisect.bisect_left(self._bounds, lag)] += 1  # `le`: upper bounds are inclusive
            self.latency_sum += lag

    def record_untimed(self, count: int) -> None:
        """``count`` events written without a publish time to measure from (a replay)."""
        self.delivered += count

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("livegate_events_delivered", "Stream events written to connections",
                                  value=self.delivered, created=self._created)
        cumulative, buckets = 0, []
        for bound, count in zip([*self._bounds, float("inf")], self._counts, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), float(cumulative)))  # type: ignore[no-untyped-call]
        name = "livegate_publish_to_send_seconds"
        family = HistogramMetricFamily(name, "Time from the bus accepting an event to writing it to a connection",
                                       buckets=buckets, sum_value=self.latency_sum)
        family.samples.append(Sample(name + "_created", {}, self._created))
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections = Gauge("livegate_connections", "Open WebSocket connections (authenticated)", registry=r)
        self.connections_total = Counter("livegate_connections_opened", "WebSocket connections accepted", registry=r)
        self.auth_failures = Counter("livegate_auth_failures", "Refused authentications by error code",
                                     ["code"], registry=r)
        self.closes = Counter("livegate_closes", "Server-initiated closes by close code", ["code"], registry=r)
        self.events_published = Counter("livegate_events_published", "Events appended to user streams",
                                        ["type"], registry=r)
        self.events_conflated = Counter("livegate_events_conflated",
                                        "Progress events dropped in favour of a newer one (slow readers)", registry=r)
        self.slow_consumer_closes = Counter("livegate_slow_consumer_closes", "Connections closed with 4001",
                                            registry=r)
        self.resumes = Counter("livegate_resumes", "Resume requests by outcome", ["outcome"], registry=r)
        self.frames_refused = Counter("livegate_frames_refused", "Client frames answered with an error",
                                      ["code"], registry=r)
        self.publish_failures = Counter("livegate_publish_failures", "Publishes refused because the bus failed",
                                        registry=r)
        # Counted and timed per delivery, on the fan-out's hot path: one lock-free call.
        self.deliveries = DeliveryMeter(
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5), registry=r)

    def watch_bus(self, counters: Callable[[], dict[str, int]]) -> None:
        """Export the bus's recovery counters as ``livegate_bus_recoveries_total{kind}``."""
        self.registry.register(_CountersCollector(
            "livegate_bus_recoveries", "What the bus recovered from: reconnects, back-filled events, "
            "dropped duplicates, stream resets, stale subscriptions", counters))
