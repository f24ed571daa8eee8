"""Three gateway processes on one Redis: one stream per user whatever process a tab is on,
and clients that move between processes (``kill -9``, SIGTERM) resume with nothing lost
or duplicated. The clients of the moving tests go through a round-robin TCP balancer with
no session affinity, as in production (docs/scaling.md)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from livegate.testing.process import GatewayProcess
from tests.scale._support import (
    ResumingClient,
    Tab,
    assert_exact_stream,
    close_all,
    eventually,
    notification,
    publish_ok,
    user_name,
)
from tests.scale.conftest import Cluster

pytestmark = [pytest.mark.redis, pytest.mark.xdist_group("scale")]


async def test_tabs_on_every_process_get_the_same_events_whoever_publishes(cluster: Cluster) -> None:
    gws = cluster.gateways
    user, other = user_name("tabs"), user_name("other")
    tabs = [Tab(gw.ws_url, gw.token(user)) for gw in gws] + [Tab(gws[0].ws_url, gws[0].token(user))]
    bystander = Tab(gws[1].ws_url, gws[1].token(other))
    try:
        welcomes = await asyncio.gather(*(t.open() for t in [*tabs, bystander]))
        # Four processes raced to create the stream; one epoch came out.
        epoch = welcomes[0]["epoch"]
        assert {w["epoch"] for w in welcomes[:-1]} == {epoch} and {w["offset"] for w in welcomes} == {0}

        expected: dict[int, str] = {}
        expected_other: dict[int, str] = {}
        for round_, gw in enumerate(gws):  # each round published through another process
            items = [notification(user, f"{user} r{round_} #{i}") for i in range(10)]
            items[3:3] = [notification(other, f"{other} r{round_} a")]
            items.append(notification(other, f"{other} r{round_} b"))
            positions = await publish_ok(gw, items)
            for item, (item_epoch, offset) in zip(items, positions, strict=True):
                target = expected if item["userId"] == user else expected_other
                assert item_epoch == (epoch if target is expected else item_epoch)
                target[offset] = item["event"]["message"]
        assert sorted(expected) == list(range(1, 31)) and sorted(expected_other) == list(range(1, 7))

        await asyncio.gather(*(t.wait_events(30) for t in tabs), bystander.wait_events(6))
        for tab in tabs:
            assert_exact_stream(tab.frames, expected, epoch)
            assert tab.events == tabs[0].events  # the same frames, byte for byte once parsed
        assert_exact_stream(bystander.frames, expected_other, welcomes[-1]["epoch"])

        # A tab resuming on a third process replays exactly what came after its position.
        late = Tab(gws[2].ws_url, gws[2].token(user))
        tabs.append(late)
        welcome = await late.open(resume=(epoch, 10))
        assert welcome["recovered"] is True and welcome["offset"] == 30
        (position,) = await publish_ok(gws[1], [notification(user, f"{user} last")])
        expected[position[1]] = f"{user} last"
        await asyncio.gather(*(t.wait_events(31) for t in tabs[:-1]), late.wait_events(21))
        assert_exact_stream(late.frames, {o: m for o, m in expected.items() if o > 10}, epoch)
        for tab in tabs[:-1]:
            assert_exact_stream(tab.frames, expected, epoch)
        await asyncio.sleep(0)
        assert len(bystander.events) == 6
    finally:
        await close_all([*tabs, bystander])


class _Publisher:
    """Publishes one event per user per batch, round robin through ``gateways``, until told
    to stop; remembers what each offset must carry."""

    def __init__(self, gateways: list[GatewayProcess], users: list[str]) -> None:
        self.gateways, self.users = gateways, users
        self.expected: dict[str, dict[int, str]] = {u: {} for u in users}
        self.epochs: dict[str, str] = {}
        self.batches = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set() and self.batches < 600:
            gw = self.gateways[self.batches % len(self.gateways)]
            items = [notification(u, f"{u} #{self.batches}") for u in self.users]
            for item, (epoch, offset) in zip(items, await publish_ok(gw, items), strict=True):
                self.expected[item["userId"]][offset] = item["event"]["message"]
                assert self.epochs.setdefault(item["userId"], epoch) == epoch
            self.batches += 1
            await asyncio.sleep(0.01)

    async def wait_batches(self, count: int, timeout: float = 10.0) -> None:
        target = self.batches + count
        await eventually(lambda: self.batches >= target or (self._task is not None and self._task.done()),
                         timeout=timeout, what=f"{count} more batches published")

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await asyncio.wait_for(self._task, 10)  # re-raises a failed publish


async def _move_clients(cluster: Cluster, how: str) -> tuple[list[ResumingClient], dict[str, Any]]:
    """Six clients through the balancer (two per process), a publisher through the two
    survivors, and ``how`` (kill or terminate) done to the middle process mid-stream."""
    gws = cluster.gateways
    victim, survivors = gws[1], [gws[0], gws[2]]
    users = [user_name(how) for _ in range(3)]
    clients = [ResumingClient(cluster.balancer.ws_url, victim.token(u)) for u in users for _ in range(2)]
    publisher = _Publisher(survivors, users)
    info: dict[str, Any] = {"users": users, "publisher": publisher}
    try:
        for client in clients:  # one by one: round robin puts two on each process
            await client.start()
        assert cluster.balancer.open_links(victim.port) == 2
        publisher.start()
        await publisher.wait_batches(20)
        if how == "kill":
            assert await asyncio.to_thread(victim.kill) == -9
        else:
            # Graceful: done before GatewayProcess's stop timeout would SIGKILL it (uvicorn
            # re-raises the SIGTERM it handled, hence -15).
            assert await asyncio.to_thread(victim.terminate) in (0, -15)
            assert "Application shutdown complete" in victim.log_tail(200)
        def moved() -> list[Any]:
            return [c for c in clients if len(c.welcomes) >= 2]

        await eventually(lambda: len(moved()) == 2, timeout=15.0, what="the victim's two clients reconnected")
        assert cluster.balancer.open_links(victim.port) == 0
        await publisher.wait_batches(20)  # and the stream goes on after the move
        await publisher.stop()
        for client, user in zip(clients, [u for u in users for _ in range(2)], strict=True):
            await client.wait_events(len(publisher.expected[user]))
            assert not client.invalid, client.invalid[:3]
            assert_exact_stream(client.frames, publisher.expected[user], publisher.epochs[user])
        info["moved"] = moved()
        assert [len(c.welcomes) for c in clients].count(1) == 4  # the others never moved
        return clients, info
    except BaseException:
        await close_all(clients)
        raise


async def test_kill_9_of_a_process_moves_its_clients_who_resume_exactly(cluster: Cluster) -> None:
    clients, info = await _move_clients(cluster, "kill")
    try:
        for client in info["moved"]:
            assert client.close_codes == []  # no close frame from a killed process (1006)
        assert info["publisher"].batches >= 40
    finally:
        await close_all(clients)


async def test_graceful_shutdown_moves_clients_with_nothing_lost(cluster: Cluster) -> None:
    clients, info = await _move_clients(cluster, "terminate")
    try:
        for client in info["moved"]:
            # asyncapi.yaml: `error` server_restart, then close 4000 ("reconnect elsewhere").
            assert client.close_codes == [4000]
            errors = [f for f in client.frames if f["type"] == "error"]
            assert [e["code"] for e in errors] == ["server_restart"]
    finally:
        await close_all(clients)
