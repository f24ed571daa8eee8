"""Property: for random interleavings of publishes, connects, disconnects and resumes over
several users and tabs, each connection sees only its user's events, in order, and every
tab's union of events (across its resumes) has no gap and no duplicate."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livegate.protocol import http
from livegate.testing.gateway import running_gateway
from livegate.testing.spec_validation import assert_valid_message

USERS = ["u1", "u2", "u3"]
TABS = 4

op = st.one_of(
    st.tuples(st.just("publish"), st.sampled_from(USERS), st.integers(1, 6)),
    st.tuples(st.just("connect"), st.integers(0, TABS - 1)),
    st.tuples(st.just("disconnect"), st.integers(0, TABS - 1)),
)


async def _drain(ws, expected_top: int, sink: list[dict], timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while (sink[-1]["offset"] if sink else 0) < expected_top:
            message = assert_valid_message(await ws.recv())
            if message["type"] != "welcome" and "offset" in message:
                sink.append(message)


async def scenario(ops: list[tuple]) -> None:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as tmp:
        async with running_gateway(Path(tmp)) as gw:
            tab_user = {t: USERS[t % len(USERS)] for t in range(TABS)}
            sockets: dict[int, object] = {}
            seen: dict[int, list[dict]] = {t: [] for t in range(TABS)}
            position: dict[int, dict | None] = {t: None for t in range(TABS)}
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
                    ws = await websockets.connect(gw.ws_url, compression=None, max_queue=None)
                    auth = {"type": "auth", "token": gw.token(tab_user[tab])}
                    if position[tab]:
                        auth["resume"] = position[tab]
                    await ws.send(json.dumps(auth))
                    welcome = assert_valid_message(await ws.recv())
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
                    await ws.close()  # type: ignore[attr-defined]
            for tab, ws in sockets.items():
                await _drain(ws, top[tab_user[tab]], seen[tab])
                await ws.close()  # type: ignore[attr-defined]
            for tab, events in seen.items():
                user = tab_user[tab]
                if not events:
                    continue
                offsets = [e["offset"] for e in events]
                assert offsets == list(range(1, len(offsets) + 1)), f"tab {tab}: gap or duplicate {offsets}"
                assert all(e["message"] == f"{user}-{e['offset']}" for e in events), "another user's event leaked"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=3, max_size=25))
def test_random_interleavings_keep_streams_exact(ops: list[tuple]) -> None:  # type: ignore[type-arg]
    asyncio.run(scenario(ops))
