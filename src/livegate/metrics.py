"""Prometheus metrics (prometheus-client), one registry per gateway instance."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector


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
        self.events_delivered = Counter("livegate_events_delivered", "Stream events written to connections",
                                        registry=r)
        self.events_conflated = Counter("livegate_events_conflated",
                                        "Progress events dropped in favour of a newer one (slow readers)", registry=r)
        self.slow_consumer_closes = Counter("livegate_slow_consumer_closes", "Connections closed with 4001",
                                            registry=r)
        self.resumes = Counter("livegate_resumes", "Resume requests by outcome", ["outcome"], registry=r)
        self.frames_refused = Counter("livegate_frames_refused", "Client frames answered with an error",
                                      ["code"], registry=r)
        self.publish_failures = Counter("livegate_publish_failures", "Publishes refused because the bus failed",
                                        registry=r)
        self.delivery_latency = Histogram(
            "livegate_publish_to_send_seconds",
            "Time from the bus accepting an event to writing it to a connection",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )

    def watch_bus(self, counters: Callable[[], dict[str, int]]) -> None:
        """Export the bus's recovery counters as ``livegate_bus_recoveries_total{kind}``."""
        self.registry.register(_CountersCollector(
            "livegate_bus_recoveries", "What the bus recovered from: reconnects, back-filled events, "
            "dropped duplicates, stream resets, stale subscriptions", counters))
