"""The pure webhook rules: address ranges, the allow-list, URL shapes, endpoints from the
configuration, stable ids and the retry schedule (clock and randomness passed in)."""

from __future__ import annotations

import base64
import ipaddress
import json
from pathlib import Path

import pytest

from livegate.webhooks.policy import (
    AllowList,
    RetryPolicy,
    WebhookConfigError,
    address_refusal,
    check_url_shape,
    delivery_id,
    load_endpoints,
)

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
NOTHING = AllowList()


@pytest.mark.parametrize("address, kind", [
    ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"), ("::1", "loopback"),
    ("10.0.0.1", "private"), ("172.16.5.4", "private"), ("172.31.255.255", "private"), ("192.168.0.1", "private"),
    ("fd12::1", "unique-local"), ("fc00::1", "unique-local"),
    ("169.254.10.10", "link-local"), ("fe80::1", "link-local"),
    ("100.64.0.1", "CGNAT"), ("100.127.255.254", "CGNAT"),
    ("224.0.0.251", "multicast"), ("239.1.1.1", "multicast"), ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("169.254.169.254", "metadata"), ("fd00:ec2::254", "metadata"),
    ("::ffff:192.168.1.1", "private"), ("::ffff:127.0.0.1", "loopback"),
    ("192.0.2.1", "not a public address"),  # TEST-NET-1: documentation only
])
def test_non_public_addresses_are_refused_by_name(address: str, kind: str) -> None:
    refusal = address_refusal("example.com", ipaddress.ip_address(address), NOTHING)
    assert refusal is not None and kind in refusal


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111", "172.32.0.1"])
def test_public_addresses_pass(address: str) -> None:
    assert address_refusal("example.com", ipaddress.ip_address(address), NOTHING) is None


def test_the_allow_list_admits_networks_addresses_and_host_names() -> None:
    allow = AllowList.parse(["127.0.0.1/32", "10.1.0.0/16", "::1", "Hooks.Internal"])
    assert address_refusal("x", ipaddress.ip_address("127.0.0.1"), allow) is None
    assert address_refusal("x", ipaddress.ip_address("10.1.200.3"), allow) is None
    assert address_refusal("x", ipaddress.ip_address("::1"), allow) is None
    assert address_refusal("x", ipaddress.ip_address("::ffff:127.0.0.1"), allow) is None
    assert address_refusal("hooks.internal.", ipaddress.ip_address("192.168.9.9"), allow) is None
    assert address_refusal("x", ipaddress.ip_address("127.0.0.2"), allow) is not None
    assert address_refusal("x", ipaddress.ip_address("10.2.0.1"), allow) is not None


@pytest.mark.parametrize("url, problem", [
    ("https://example.com/hook", None), ("http://example.com:8080/h?x=1", None),
    ("ftp://example.com/", "only http and https"), ("file:///etc/passwd", "only http and https"),
    ("javascript:alert(1)", "only http and https"), ("http:///nohost", "no host"),
    ("http://u:p@example.com/", "credentials"), ("http://example.com:99999/", "not a URL"),
])
def test_url_shapes(url: str, problem: str | None) -> None:
    found = check_url_shape(url)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_endpoints_load_from_json_or_a_file_with_default_events(tmp_path: Path) -> None:
    items = [{"name": "billing", "url": "https://billing.example/hook", "secret": SECRET},
             {"name": "alerts", "url": "https://alerts.example/hook", "secret": SECRET, "events": ["failed"]}]
    path = tmp_path / "webhooks.json"
    path.write_text(json.dumps(items))
    for value in (json.dumps(items), str(path)):
        billing, alerts = load_endpoints(value)
        assert billing.wants("completed") and billing.wants("cancelled") and not billing.wants("running")
        assert alerts.events == {"failed"}
    assert load_endpoints(None) == () and load_endpoints("") == ()


@pytest.mark.parametrize("item, problem", [
    ({"name": "a", "url": "https://x.example/", "secret": "plain"}, "whsec_"),
    ({"name": "a", "url": "https://x.example/", "secret": "whsec_" + base64.b64encode(b"short").decode()}, "24..64"),
    ({"name": "a", "url": "ftp://x.example/", "secret": SECRET}, "http and https"),
    ({"name": "generation", "url": "https://x.example/", "secret": SECRET}, "taken"),
    ({"name": "a", "url": "https://x.example/", "secret": SECRET, "events": ["done"]}, "events"),
    ({"name": "a", "secret": SECRET}, "name, url and secret"),
])
def test_bad_endpoints_are_refused_with_a_reason(item: dict[str, object], problem: str) -> None:
    with pytest.raises(WebhookConfigError, match=problem):
        load_endpoints(json.dumps([item]))


def test_a_delivery_id_is_stable_per_generation_event_and_endpoint() -> None:
    one = delivery_id("gen_1", "completed", "generation")
    assert one == delivery_id("gen_1", "completed", "generation") and one.startswith("msg_")
    assert len({one, delivery_id("gen_1", "failed", "generation"), delivery_id("gen_2", "completed", "generation"),
                delivery_id("gen_1", "completed", "billing")}) == 4


def test_retries_back_off_exponentially_with_full_jitter_within_bounds() -> None:
    policy = RetryPolicy(base_seconds=5, factor=6, max_delay_seconds=36000, max_attempts=8, period_seconds=3 * 86400)
    assert [policy.ceiling(n) for n in range(1, 8)] == [5, 30, 180, 1080, 6480, 36000, 36000]
    highest = lambda low, high: high  # noqa: E731 - the jitter's upper end
    lowest = lambda low, high: low  # noqa: E731
    assert policy.next_attempt_at(0.0, 100.0, 1, highest) == 105.0
    assert policy.next_attempt_at(0.0, 100.0, 1, lowest) == 100.0  # full jitter: down to no wait
    assert policy.next_attempt_at(0.0, 100.0, 8, highest) is None  # attempts spent
    assert policy.next_attempt_at(0.0, 3 * 86400 - 10.0, 3, highest) is None  # beyond the period
    assert policy.next_attempt_at(0.0, 3 * 86400 - 10.0, 3, lowest) == 3 * 86400 - 10.0
