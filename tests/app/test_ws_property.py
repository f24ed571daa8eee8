"""Property: for random interleavings of publishes, connects, disconnects and resumes over
several users and tabs, each connection sees only its user's events, in order, and every
tab's union of events (across its resumes) has no gap and no duplicate — over the WebSocket
(``auth.resume``) and over SSE (a new ticket and the ``Last-Event-ID`` of the last event id
seen, what an EventSource-based client does)."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livegate.protocol import http
from livegate.testing.gateway import RunningGateway, running_gateway
from livegate.testing.spec_validation import assert_valid_message
from livegate.testing.sse import SseClient

USERS = ["u1", "u2", "u3"]
TABS = 4

op = st.one_of(
    st.tuples(st.just("publish"), st.sampled_from(USERS), st.integers(1, 6)),
    st.tuples(st.just("connect"), st.integers(0, TABS - 1)),
    st.tuples(st.just("disconnect"), st.integers(0, TABS - 1)),
)


class WsTab:
    """A tab on the WebSocket: resumes with ``auth.resume``."""

    def __init__(self, gw: RunningGateway) -> None:
        self.gw = gw
        self.ws: Any = None

    async def connect(self, user: str, position: dict | None) -> dict:  # type: ignore[type-arg]
        self.ws = await websockets.connect(self.gw.ws_url, compression=None, max_queue=None)
        auth = {"type": "auth", "token": self.gw.token(user), **({"resume": position} if position else {})}
        await self.ws.send(json.dumps(auth))
        return await self.recv()

    async def recv(self) -> dict:  # type: ignore[type-arg]
        return assert_valid_message(await self.ws.recv())

    async def close(self) -> None:
        await self.ws.close()


class SseTab:
    """A tab on SSE: a new ticket per connect, resuming from the last event ``id`` seen."""

    def __init__(self, gw: RunningGateway) -> None:
        self.gw = gw
        self.sse = SseClient(gw.http_url)

    async def connect(self, user: str, position: dict | None) -> dict:  # type: ignore[type-arg]
        await self.sse.open(self.gw.token(user), last_event_id=self.sse.last_event_id if position else None)
        return await self.recv()

    async def recv(self) -> dict:  # type: ignore[type-arg]
        return assert_valid_message(await self.sse.next_message(), "sse")

    async def close(self) -> None:
        await self.sse.close_stream()


async def _drain(tab: WsTab | SseTab, expected_top: int, sink: list[dict], timeout: float = 5.0) -> None:  # type: ignore[type-arg]
    async with asyncio.timeout(timeout):
        while (sink[-1]["offset"] if sink else 0) < expected_top:
            message = await tab.recv()
            if message["type"] != "welcome" and "offset" in message:
                sink.append(message)


async def scenario(ops: list[tuple], transport: str = "ws") -> None:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as tmp:
        async with running_gateway(Path(tmp)) as gw:
            tab_user = {t: USERS[t % len(USERS)] for t in range(TABS)}
            tabs = {t: SseTab(gw) if transport == "sse" else WsTab(gw) for t in range(TABS)}
            sockets: dict[int, WsTab | SseTab] = {}
            seen: dict[int, list[dict]] = {t: [] for t in range(TABS)}  # type: ignore[type-arg]
            position: dict[int, dict | None] = {t: None for t in range(TABS)}  # type: ignore[type-arg]
            top = dict.fromkeys(USERS, 0)
            for action, *args in ops:
                if action == "publish":
                    user, count = args
                    events = [(user, http.NotificationInput(level="info", message=f"{user}-{top[user] + i + 1}"))
                              for i in range(count)]
                    await gw.gateway.publisher.publish(events)
                    top[user] += count
                elif action == "connect" and args[0] not in sockets:
                    tab = args[0]
                    ws = tabs[tab]
                    welcome = await ws.connect(tab_user[tab], position[tab])
                    if position[tab]:
                        assert welcome["recovered"] is True
                    elif not seen[tab]:
                        seen[tab].extend({"offset": o, "message": f"{tab_user[tab]}-{o}"}
                                         for o in range(1, welcome["offset"] + 1))
                    sockets[tab] = ws
                elif action == "disconnect" and args[0] in sockets:
                    tab = args[0]
                    ws = sockets.pop(tab)
                    await _drain(ws, top[tab_user[tab]], seen[tab])
                    position[tab] = {"epoch": (await gw.gateway.bus.read(tab_user[tab], None)).epoch,
                                     "offset": seen[tab][-1]["offset"]} if seen[tab] else None
                    if transport == "sse" and position[tab]:  # the id of the last event is that position
                        assert tabs[tab].sse.last_event_id == f"{position[tab]['epoch']}:{position[tab]['offset']}"  # type: ignore[union-attr]
                    await ws.close()
            for tab, ws in sockets.items():
                await _drain(ws, top[tab_user[tab]], seen[tab])
                await ws.close()
            for sse_tab in tabs.values():
                if isinstance(sse_tab, SseTab):
                    await sse_tab.sse.aclose()
            for tab, events in seen.items():
                user = tab_user[tab]
                if not events:
                    continue
                offsets = [e["offset"] for e in events]
                assert offsets == list(range(1, len(offsets) + 1)), f"tab {tab}: gap or duplicate {offsets}"
                assert all(e["message"] == f"{user}-{e['offset']}" for e in events), "another user's event leaked"


@pytest.mark.parametrize("transport", ["ws", "sse"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=3, max_size=25))
def test_random_interleavings_keep_streams_exact(transport: str, ops: list[tuple]) -> None:  # type: ignore[type-arg]
    asyncio.run(scenario(ops, transport))
