"""Pure webhook decisions: endpoints, events, retries, addresses (no I/O, clock passed in).

Implements the delivery rules of openapi.yaml ``webhooks.generationEvent`` and
``listGenerationWebhooks``:

* an *endpoint* is ``(name, url, secret, events)``; deployment endpoints come from
  ``LIVEGATE_WEBHOOKS``, a generation's own ``webhookUrl`` is the endpoint named
  :data:`GENERATION_ENDPOINT`, signed with the deployment secret ``LIVEGATE_WEBHOOK_SECRET``;
* one delivery per (generation, status, endpoint), with a ``webhook-id`` derived from those
  three (:func:`delivery_id`), so every retry — from any process — carries the same id;
* retries: exponential backoff with *full jitter* (AWS architecture blog, "Exponential
  Backoff And Jitter": ``uniform(0, min(cap, base * factor**n))``), at most
  ``max_attempts`` attempts and none due after ``created_at + period``;
* addresses: loopback, private (RFC 1918), unique-local, link-local, CGNAT, multicast,
  unspecified, metadata and any other non-global address are refused unless the allow-list
  admits the host name or the address (``LIVEGATE_WEBHOOK_ALLOW``).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "FINAL_EVENTS",
    "GENERATION_ENDPOINT",
    "STATUSES",
    "AllowList",
    "Endpoint",
    "RetryPolicy",
    "WebhookConfigError",
    "address_refusal",
    "check_url_shape",
    "delivery_id",
    "event_type",
    "load_endpoints",
]

STATUSES = ("queued", "running", "completed", "failed", "cancelled")
FINAL_EVENTS = ("completed", "failed", "cancelled")
GENERATION_ENDPOINT = "generation"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Checked in this order: the first match names the refusal (metadata before link-local).
REFUSED_RANGES: tuple[tuple[str, Network], ...] = tuple(
    (name, ipaddress.ip_network(cidr)) for name, cidr in (
        ("metadata", "169.254.169.254/32"), ("metadata", "fd00:ec2::254/128"),
        ("loopback", "127.0.0.0/8"), ("loopback", "::1/128"),
        ("private", "10.0.0.0/8"), ("private", "172.16.0.0/12"), ("private", "192.168.0.0/16"),
        ("unique-local", "fc00::/7"),
        ("link-local", "169.254.0.0/16"), ("link-local", "fe80::/10"),
        ("CGNAT", "100.64.0.0/10"),
        ("multicast", "224.0.0.0/4"), ("multicast", "ff00::/8"),
        ("unspecified", "0.0.0.0/8"), ("unspecified", "::/128"),
    ))


class WebhookConfigError(ValueError):
    """``LIVEGATE_WEBHOOKS`` (or another webhook setting) cannot be used; the message says why."""


def event_type(status: str) -> str:
    """The Standard Webhooks ``type`` of a lifecycle status: ``generation.<status>``."""
    return f"generation.{status}"


def delivery_id(generation_id: str, status: str, endpoint: str) -> str:
    """The ``webhook-id`` of the one delivery of ``status`` to ``endpoint``: stable, so a
    receiver deduplicates retries (and a repeated enqueue hits the same primary key)."""
    digest = hashlib.sha256(f"{generation_id}\0{status}\0{endpoint}".encode()).hexdigest()
    return "msg_" + digest[:24]


def _check_secret(secret: str, where: str) -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 24..64 random bytes."""
    if not secret.startswith("whsec_"):
        raise WebhookConfigError(f"{where}: the secret must look like whsec_<base64>")
    try:
        key = base64.b64decode(secret[len("whsec_"):] + "==", validate=False)
    except ValueError as exc:
        raise WebhookConfigError(f"{where}: the secret is not base64 after whsec_") from exc
    if not 24 <= len(key) <= 64:
        raise WebhookConfigError(f"{where}: the secret must decode to 24..64 bytes (got {len(key)})")
    return secret


@dataclass(frozen=True)
class Endpoint:
    """Where one kind of delivery goes. ``url`` is ``None`` for :data:`GENERATION_ENDPOINT`
    (each generation brings its own)."""

    name: str
    url: str | None
    secret: str
    events: frozenset[str] = frozenset(FINAL_EVENTS)

    def wants(self, status: str) -> bool:
        return status in self.events


def _events(value: object, where: str) -> frozenset[str]:
    if value is None:
        return frozenset(FINAL_EVENTS)
    if not isinstance(value, list) or not value or any(v not in STATUSES for v in value):
        raise WebhookConfigError(f"{where}: events must be a non-empty list of {', '.join(STATUSES)}")
    return frozenset(value)


def load_endpoints(value: str | None) -> tuple[Endpoint, ...]:
    """Deployment endpoints from ``LIVEGATE_WEBHOOKS``: a JSON array, or the path of a file
    holding one, of ``{"name", "url", "secret", "events"?}`` (``events`` defaults to the
    final statuses)."""
    if not value:
        return ()
    text = value if value.lstrip().startswith("[") else Path(value).read_text()
    try:
        items = json.loads(text)
    except ValueError as exc:
        raise WebhookConfigError(f"LIVEGATE_WEBHOOKS is not JSON: {exc}") from exc
    if not isinstance(items, list):
        raise WebhookConfigError("LIVEGATE_WEBHOOKS must be a JSON array of endpoints")
    endpoints: list[Endpoint] = []
    for index, item in enumerate(items):
        where = f"LIVEGATE_WEBHOOKS[{index}]"
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("name", "url", "secret")):
            raise WebhookConfigError(f"{where}: needs string fields name, url and secret")
        name = item["name"]
        if name == GENERATION_ENDPOINT or name in {e.name for e in endpoints}:
            raise WebhookConfigError(f"{where}: the name {name!r} is taken")
        problem = check_url_shape(item["url"])
        if problem:
            raise WebhookConfigError(f"{where}: {problem}")
        endpoints.append(Endpoint(name=name, url=item["url"], secret=_check_secret(item["secret"], where),
                                  events=_events(item.get("events"), where)))
    return tuple(endpoints)


def generation_endpoint(secret: str | None) -> Endpoint | None:
    """The endpoint of per-generation ``webhookUrl``s (``None`` without a deployment secret)."""
    if not secret:
        return None
    return Endpoint(GENERATION_ENDPOINT, None, _check_secret(secret, "LIVEGATE_WEBHOOK_SECRET"))


def check_url_shape(url: str) -> str | None:
    """Why ``url`` cannot be a webhook URL before any lookup (``None``: it can)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "not a URL"
    if parts.scheme not in ("http", "https"):
        return "only http and https URLs are allowed"
    if not parts.hostname:
        return "the URL has no host"
    if parts.username is not None or parts.password is not None:
        return "credentials in the URL are not allowed"
    return None


@dataclass(frozen=True)
class AllowList:
    """``LIVEGATE_WEBHOOK_ALLOW``: comma-separated CIDRs (or addresses) and host names that
    may be called even though they are not public."""

    networks: tuple[Network, ...] = ()
    hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        networks: list[Network] = []
        hosts: set[str] = set()
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts))

    def admits_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def admits(self, address: IPAddress) -> bool:
        return any(address.version == n.version and address in n for n in self.networks)


def address_refusal(host: str, address: IPAddress, allow: AllowList) -> str | None:
    """Why a request to ``host`` at ``address`` is refused (``None``: allowed)."""
    if allow.admits_host(host) or allow.admits(address):
        return None
    checked = address
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        checked = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if allow.admits(checked):
            return None
    for name, network in REFUSED_RANGES:
        if checked.version == network.version and checked in network:
            return f"{host} resolves to {address}, a {name} address"
    if not checked.is_global:
        return f"{host} resolves to {address}, not a public address"
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """When the attempts of one delivery are made (settings ``LIVEGATE_WEBHOOK_BACKOFF_*``,
    ``LIVEGATE_WEBHOOK_MAX_ATTEMPTS``, ``LIVEGATE_WEBHOOK_RETRY_PERIOD``). The defaults give
    ceilings of 5 s, 30 s, 3 min, 18 min, 1.8 h, then 10 h, within 3 days, close to the
    Standard Webhooks recommendation (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h)."""

    base_seconds: float = 5.0
    factor: float = 6.0
    max_delay_seconds: float = 36000.0
    max_attempts: int = 8
    period_seconds: float = 3 * 86400.0

    def ceiling(self, attempts_made: int) -> float:
        """The largest delay after the ``attempts_made``-th failed attempt (1-based)."""
        return min(self.max_delay_seconds, self.base_seconds * self.factor ** max(0, attempts_made - 1))

    def next_attempt_at(self, created_at: float, now: float, attempts_made: int,
                        uniform: Callable[[float, float], float] = random.uniform) -> float | None:
        """When to try again after a failed attempt (full jitter); ``None``: give up."""
        if attempts_made >= self.max_attempts:
            return None
        due = now + uniform(0.0, self.ceiling(attempts_made))
        if due > created_at + self.period_seconds:
            return None
        return due
