"""A resume replays a long history in bounded pages (LIVEGATE_REPLAY_PAGE_EVENTS / _BYTES),
page by page as the connection takes them, with live events published meanwhile following
the replay exactly (no gap, no duplicate), on the memory and the Redis bus."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from livegate.bus import Bus
from livegate.bus.memory import MemoryBus
from livegate.bus.redis import RedisBus
from livegate.testing.gateway import running_gateway
from livegate.testing.redis_server import RedisServer

from .conftest import note

PAGE = 7


def recording_reads(bus: Bus) -> list[int]:
    """Wrap ``bus.read``: the list gets each read's event count."""
    sizes: list[int] = []
    read: Callable[..., Awaitable[Any]] = bus.read

    async def recorded(*args: Any, **kwargs: Any) -> Any:
        result = await read(*args, **kwargs)
        sizes.append(len(result.events))
        return result

    bus.read = recorded  # type: ignore[method-assign]
    return sizes


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_long_resume_is_replayed_in_pages_and_meets_live_events_exactly(
    backend: str, tmp_path: Path, connect: Any, request: pytest.FixtureRequest
) -> None:
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        bus: Bus = RedisBus(server.url)
    else:
        bus = MemoryBus()
    sizes = recording_reads(bus)
    async with running_gateway(tmp_path, bus=bus, replay_page_events=PAGE) as gw:
        user = f"pages-{backend}"
        first = await connect(gw)
        welcome = await first.auth(gw.token(user))
        for start in range(0, 150, 50):
            await gw.publish(user, *[note(f"old {start + i}") for i in range(50)])
        await first.ws.close()

        again = await connect(gw)
        publisher = asyncio.create_task(gw.publish(user, *[note(f"live {i}") for i in range(40)]))
        resumed = await again.auth(gw.token(user), resume={"epoch": welcome["epoch"], "offset": 3})
        assert resumed["recovered"] is True
        await publisher
        got = await again.events(190 - 3, timeout=15.0)
        assert [e["offset"] for e in got] == list(range(4, 191))
        assert [e["message"] for e in got[:147]] == [f"old {i}" for i in range(3, 150)]
        assert [e["message"] for e in got[147:]] == [f"live {i}" for i in range(40)]
    # The join and every later page read at most PAGE events: never the whole history.
    assert sizes and max(sizes) == PAGE and len([s for s in sizes if s]) >= (resumed["offset"] - 3) // PAGE
