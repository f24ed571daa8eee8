"""The delivery path's lock-free metrics expose exactly what prometheus-client's own
Counter and Histogram would for the same observations."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from livegate.metrics import LoopCounter, LoopHistogram

BUCKETS = (0.001, 0.01, 0.1, 1.0)
VALUES = [0.0, 0.001, 0.0011, 0.01, 0.05, 0.1, 0.5, 1.0, 3.0, 0.0005]


def _samples(registry: CollectorRegistry) -> list[tuple[str, list[tuple[str, str]], float]]:
    return sorted((s.name, sorted(s.labels.items()), s.value) for m in registry.collect() for s in m.samples
                  if not s.name.endswith("_created"))


def test_loop_histogram_matches_prometheus_histogram() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    mine = LoopHistogram("lat", "latency", buckets=BUCKETS, registry=ours)
    reference = Histogram("lat", "latency", buckets=BUCKETS, registry=theirs)
    for value in VALUES:
        mine.observe(value)
        reference.observe(value)
    assert _samples(ours) == _samples(theirs)


def test_loop_counter_matches_prometheus_counter() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    mine, reference = LoopCounter("sent", "sent", registry=ours), Counter("sent", "sent", registry=theirs)
    for amount in (1, 1, 5):
        mine.inc(amount)
        reference.inc(amount)
    assert _samples(ours) == _samples(theirs)
