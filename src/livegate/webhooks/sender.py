"""One webhook attempt over HTTP: resolve, check, connect to the checked address, sign, POST.

Server-side request forgery is what this module exists to prevent (openapi.yaml
``CreateGenerationRequest.webhookUrl``): the host is resolved **once**, every address it
resolves to is checked (:func:`livegate.webhooks.policy.address_refusal`), and the request
goes to the first address *itself* — the URL's host replaced by the IP, the original
``Host`` header and TLS server name (SNI, and so certificate checking) kept — so a DNS
answer that changes between check and connect (rebinding) cannot redirect it. Redirects
are never followed (a 3xx is a failed attempt), proxies from the environment are ignored
(a proxy would connect by name), and each attempt is bounded: ``connect_timeout``, a total
``timeout`` over connect + send + the whole answer, and at most ``max_response_bytes`` of
answer read.

httpx errors are mapped here to an :class:`Outcome`; nothing else sees them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import httpx
from standardwebhooks import Webhook

from livegate.webhooks.policy import AllowList, IPAddress, address_refusal, check_url_shape

__all__ = ["Outcome", "Refused", "Resolver", "Sender", "system_resolver"]

Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]


class Refused(Exception):
    """The URL may not be called (shape, lookup or address); the message says why."""


@dataclass(frozen=True)
class Outcome:
    """How one attempt went. ``permanent``: retrying cannot help (the URL is refused)."""

    ok: bool
    status_code: int | None = None
    error: str | None = None
    permanent: bool = False


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in seen:
            seen.append(address)
    return seen


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (``address``) and what to say (``host``)."""

    url: str
    host: str
    port: int
    address: IPAddress

    def pinned_url(self) -> str:
        parts = urlsplit(self.url)
        ip = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return urlunsplit((parts.scheme, f"{ip}:{self.port}", parts.path or "/", parts.query, ""))

    def host_header(self) -> str:
        default = 443 if urlsplit(self.url).scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


class Sender:
    """Makes attempts; one pooled httpx client per process (:meth:`aclose` it)."""

    def __init__(self, allow: AllowList, *, connect_timeout: float = 5.0, timeout: float = 15.0,
                 max_response_bytes: int = 64 * 1024, resolver: Resolver = system_resolver) -> None:
        self.allow = allow
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.resolver = resolver
        self._client = httpx.AsyncClient(
            follow_redirects=False, trust_env=False,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            headers={"user-agent": "livegate-webhooks"},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def check(self, url: str) -> Target:
        """Resolve once and check every address; raise :class:`Refused`."""
        problem = check_url_shape(url)
        if problem:
            raise Refused(problem)
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        try:
            addresses = [literal] if literal is not None else await self.resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise Refused(f"{host} cannot be resolved: {exc}") from None
        if not addresses:
            raise Refused(f"{host} resolves to no address")
        for address in addresses:
            refusal = address_refusal(host, address, self.allow)
            if refusal:
                raise Refused(refusal)
        return Target(url=url, host=host, port=port, address=addresses[0])

    async def send(self, url: str, secret: str, msg_id: str, body: bytes, now: datetime | None = None) -> Outcome:
        """One signed POST of ``body`` (Standard Webhooks headers) to ``url``."""
        try:
            target = await self.check(url)
        except Refused as exc:
            return Outcome(ok=False, error=f"refused: {exc}", permanent=True)
        stamp = (now or datetime.now(UTC)).replace(microsecond=0)
        signature = Webhook(secret).sign(msg_id, stamp, body.decode())
        headers = {
            "host": target.host_header(), "content-type": "application/json",
            "webhook-id": msg_id, "webhook-timestamp": str(int(stamp.timestamp())), "webhook-signature": signature,
        }
        extensions = {"sni_hostname": target.host} if urlsplit(url).scheme == "https" else {}
        try:
            async with asyncio.timeout(self.timeout):
                request = self._client.build_request("POST", target.pinned_url(), content=body, headers=headers,
                                                     extensions=extensions)
                response = await self._client.send(request, stream=True)
                try:
                    read = 0
                    async for piece in response.aiter_raw():
                        read += len(piece)
                        if read > self.max_response_bytes:
                            return Outcome(ok=False, status_code=response.status_code,
                                           error=f"the answer is over {self.max_response_bytes} bytes")
                finally:
                    await response.aclose()
        except TimeoutError:
            return Outcome(ok=False, error=f"no complete answer within {self.timeout:g} s")
        except httpx.TimeoutException as exc:
            return Outcome(ok=False, error=f"timed out ({type(exc).__name__})")
        except httpx.HTTPError as exc:
            return Outcome(ok=False, error=f"{type(exc).__name__}: {exc}"[:300])
        status = response.status_code
        if 200 <= status < 300:
            return Outcome(ok=True, status_code=status)
        if 300 <= status < 400:
            return Outcome(ok=False, status_code=status, error=f"HTTP {status}: redirects are not followed")
        return Outcome(ok=False, status_code=status, error=f"HTTP {status} from the endpoint")
