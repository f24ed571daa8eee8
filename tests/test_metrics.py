"""The delivery path's lock-free meter exposes exactly what prometheus-client's own Counter
and Histogram would for the same deliveries."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from livegate.metrics import DeliveryMeter

# Dyadic bounds, lags and clock: the meter recovers each lag as ``clock() - published_at``,
# exact for these, so values on a bound land in that bound's bucket as in prometheus-client.
BUCKETS = (2**-10, 2**-7, 2**-3, 1.0)
LAGS = [0.0, 2**-10, 2**-10 + 2**-20, 2**-7, 2**-4, 2**-3, 0.5, 1.0, 3.0, 2**-11]
NOW = 1024.0


def _samples(registry: CollectorRegistry) -> list[tuple[str, list[tuple[str, str]], float]]:
    return sorted((s.name, sorted(s.labels.items()), s.value) for m in registry.collect() for s in m.samples
                  if not s.name.endswith("_created"))


def _reference(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    return (Counter("livegate_events_delivered", "Stream events written to connections", registry=registry),
            Histogram("livegate_publish_to_send_seconds",
                      "Time from the bus accepting an event to writing it to a connection",
                      buckets=BUCKETS, registry=registry))


def test_delivery_meter_matches_prometheus_counter_and_histogram() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    meter = DeliveryMeter(buckets=BUCKETS, registry=ours, clock=lambda: NOW)
    delivered, latency = _reference(theirs)
    for lag in LAGS:
        meter.record(NOW - lag)
        delivered.inc()
        latency.observe(lag)
    meter.record(0.0)  # no publish time: counted, not timed
    meter.record_untimed(4)  # a replay
    delivered.inc(5)
    assert _samples(ours) == _samples(theirs)


def test_a_publish_time_ahead_of_our_clock_counts_as_no_lag() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    meter = DeliveryMeter(buckets=BUCKETS, registry=ours, clock=lambda: NOW)
    delivered, latency = _reference(theirs)
    meter.record(NOW + 0.5)  # another process's clock, slightly ahead
    delivered.inc()
    latency.observe(0.0)
    assert _samples(ours) == _samples(theirs)
