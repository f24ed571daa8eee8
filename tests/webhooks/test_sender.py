"""The sender against a real loopback receiver: it resolves a host once, connects to the
checked address while keeping the ``Host`` header, refuses a name with any refused
address, and signs what ``standardwebhooks`` verifies."""

from __future__ import annotations

import base64
import ipaddress

import pytest
from standardwebhooks import Webhook

from livegate.testing.webhook_receiver import WebhookReceiver
from livegate.webhooks.policy import AllowList, IPAddress
from livegate.webhooks.sender import Refused, Sender

SECRET = "whsec_" + base64.b64encode(b"r" * 32).decode()


class FlippingResolver:
    """A DNS that answers loopback first and a metadata address afterwards (rebinding)."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.calls += 1
        return [ipaddress.ip_address("127.0.0.1" if self.calls == 1 else "169.254.169.254")]


async def test_it_connects_to_the_address_it_checked_and_keeps_the_host(webhook_receiver: WebhookReceiver) -> None:
    resolver = FlippingResolver()
    sender = Sender(AllowList.parse(["127.0.0.1/32"]), resolver=resolver)
    try:
        outcome = await sender.send(f"http://hooks.example:{webhook_receiver.port}/hook", SECRET, "msg_1", b'{"a":1}')
    finally:
        await sender.aclose()
    assert outcome.ok and outcome.status_code == 204 and resolver.calls == 1
    (request,) = webhook_receiver.requests
    assert request.headers["host"] == f"hooks.example:{webhook_receiver.port}" and request.path == "/hook"
    assert Webhook(SECRET).verify(request.body, request.headers) == {"a": 1}
    assert request.headers["webhook-id"] == "msg_1"


async def test_a_name_with_any_refused_address_is_refused_without_a_request(webhook_receiver: WebhookReceiver) -> None:
    async def mixed(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.0.0.7")]

    sender = Sender(AllowList.parse(["127.0.0.1/32"]), resolver=mixed)
    try:
        with pytest.raises(Refused, match="private"):
            await sender.check(f"http://hooks.example:{webhook_receiver.port}/hook")
        outcome = await sender.send(f"http://hooks.example:{webhook_receiver.port}/hook", SECRET, "msg_2", b"{}")
    finally:
        await sender.aclose()
    assert not outcome.ok and outcome.permanent and "private" in (outcome.error or "")
    assert webhook_receiver.requests == []


async def test_an_unresolvable_name_is_refused() -> None:
    async def nothing(host: str, port: int) -> list[IPAddress]:
        raise OSError("Name or service not known")

    sender = Sender(AllowList(), resolver=nothing)
    try:
        with pytest.raises(Refused, match="cannot be resolved"):
            await sender.check("https://no-such-host.invalid/hook")
    finally:
        await sender.aclose()
