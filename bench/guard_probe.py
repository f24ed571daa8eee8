"""Cost of the connection limits per HTTP request (livegate.transport.guard), on uvloop:

    .venv/bin/python bench/guard_probe.py

A publish-sized request (head and body in one read) into the guard with a do-nothing inner
protocol, against httptools parsing the same bytes alone: the difference is what the guard
adds to each request besides its second parse. Bounded: 20 rounds of 2,000 requests.
"""

from __future__ import annotations

import asyncio
import timeit
from typing import Any

import httptools
import uvloop

from livegate.transport.guard import TransportLimits, guarded_http

HEAD = (b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nAuthorization: Bearer " + b"x" * 48
        + b"\r\nContent-Type: application/json\r\nContent-Length: 120\r\nUser-Agent: python-httpx/0.28\r\n"
        b"Accept: */*\r\n\r\n" + b"{}" * 60)
ROUNDS, PER_ROUND = 20, 2000


class _Inner(asyncio.Protocol):
    def __init__(self, **_args: Any) -> None:
        pass


class _Transport(asyncio.Transport):
    protocol: Any = None

    def get_protocol(self) -> Any:
        return self.protocol

    def is_reading(self) -> bool:
        return True


async def _measure() -> tuple[float, float]:
    guard = guarded_http(_Inner, _Inner, TransportLimits())()
    transport = _Transport()
    transport.protocol = guard
    guard.connection_made(transport)
    parser = httptools.HttpRequestParser(object())
    guarded, bare = [], []
    for _ in range(ROUNDS):
        guarded.append(timeit.timeit(lambda: guard.data_received(HEAD), number=PER_ROUND) / PER_ROUND)
        bare.append(timeit.timeit(lambda: parser.feed_data(HEAD), number=PER_ROUND) / PER_ROUND)
        await asyncio.sleep(0)  # the loop drops cancelled timers, as a serving loop does
    return sorted(guarded)[ROUNDS // 2] * 1e6, sorted(bare)[ROUNDS // 2] * 1e6


def main() -> None:
    guarded, bare = uvloop.run(_measure())
    print(f"guard: {guarded:.2f} us per request; httptools alone: {bare:.2f} us (medians of {ROUNDS} rounds)")


if __name__ == "__main__":
    main()
