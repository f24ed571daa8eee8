"""The chaos soak (issue 14): many users and connections on several gateways sharing one Redis
and one PostgreSQL, while gateways are SIGKILLed and restarted, Redis and PostgreSQL restart,
client connections are cut and some readers are slow; a ledger (bench/soak_ledger.py, whose
docstring defines lost, duplicated and mismatched) then checks every connection::

    .venv/bin/python bench/soak.py --minutes 3          # make soak MINUTES=3
    .venv/bin/python bench/soak.py --seconds 25 --users 6 --seed 7 --json report.json

Everything runs on 127.0.0.1 on free ports and is started and stopped here, by PID: one
``redis-server`` with ``appendonly yes`` (a restart, SIGTERM or SIGKILL, keeps the streams), ``--gateways``
``livegate serve`` processes on it, and in front of each a :class:`ChaosProxy` (prefers its
own gateway, falls back to the others while it is down). ``--users`` users hold
``--connections`` :class:`~livegate.client.LivegateClient` connections each, spread over the
proxies (so a user's tabs sit on different gateways); they reconnect and resume by themselves.
Two publishers post batches (notifications and ``generationProgress`` of a few generations per
user, so slow readers see conflation) for random users to random gateways, each event with a
unique id in its ``message``. Users also create short ``demo`` generations through random
gateways: their records and job queue live in PostgreSQL (``--no-postgres``: Redis only), so a
killed gateway's runs are taken over by another (``LIVEGATE_TAKEOVER_SECONDS``) and a database
restart is ridden out; the service's own ``generationUpdate``/``generationProgress`` events are
checked by the same ledger (by position), and every run must end with exactly one terminal
update, the one its record says. The chaos (seeded; the seed is printed) picks random moments for
each fault, the first of each kind early in the run. Then the drain: faults stop, every process
is up, one marker per user is published and every connection must reach it (bounded), and
the ledger gives the verdict. Exit status 1 when anything was lost, duplicated or mismatched
(or the run could not drain), else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import itertools
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/soak.py`

from bench.soak_ledger import PROGRESS, Connection, Ledger, Verdict
from livegate.client import ClientStopped, LivegateClient
from livegate.protocol import messages
from livegate.testing.postgres_server import PostgresServer
from livegate.testing.process import GatewayProcess
from livegate.testing.redis_server import RedisServer
from livegate.testing.tcp_proxy import ChaosProxy

STARTUP_TIMEOUT = 90.0  # the machine is shared: imports alone can take seconds
PUBLISH_TIMEOUT = 3.0
TERMINAL = frozenset({"completed", "failed", "cancelled"})
_RAW = msgspec.json.Decoder()
SERVER_COUNTERS = {"livegate_slow_consumer_closes_total": "slow_consumer_closes",
                   "livegate_events_conflated_total": "events_conflated"}


@dataclass
class Settings:
    seconds: float = 180.0
    users: int = 20
    connections: int = 3
    gateways: int = 3
    rate: float = 150.0  # events per second, all publishers together
    seed: int = 0
    # A slowed link first fills the gateway's kernel send buffer (autotuned up to tcp_wmem's max,
    # 4 MB here) before its outbox fills: a flood of big events to a user of a slowed proxy gets
    # past both, so slow readers meet the 4001 close and conflation.
    queue_max_bytes: int = 262144
    flood_bytes: int = 5_000_000
    history_max_events: int = 1000
    drain_timeout: float = 60.0
    rewind: bool = False  # restart Redis once from an older copy of its AOF (issue 14's failover gap)
    postgres: bool = True  # records and jobs in PostgreSQL, demo generations created during the chaos
    generation_rate: float = 1.0  # generations created per second, all users together
    takeover_seconds: float = 3.0  # LIVEGATE_TAKEOVER_SECONDS: how soon a killed gateway's runs move
    json_path: Path | None = None


@dataclass
class Chaos:
    kills: int = 0
    redis_restarts: int = 0
    cuts: int = 0
    slow_episodes: int = 0
    floods: int = 0
    rewinds: int = 0
    postgres_restarts: int = 0
    log: list[str] = field(default_factory=list)


@dataclass
class Generations:
    """What the soak's users created and what their connections were told about it."""

    created: dict[str, str] = field(default_factory=dict)  # generation id -> user
    create_outcomes: Counter[str] = field(default_factory=Counter)
    # (user, generation) -> positions of terminal updates seen by any connection -> status
    terminal_at: dict[tuple[str, str], dict[tuple[str, int], str]] = field(default_factory=dict)
    records: dict[str, str] = field(default_factory=dict)  # generation id -> final status in GET
    # Runs whose create got no answer (timed out, the gateway killed) but that exist: named by
    # their own updates (generation id -> the user whose connection saw them first), and then
    # checked like the created ones.
    adopted: dict[str, str] = field(default_factory=dict)

    def seen(self, user: str, generation: str, status: str, position: tuple[str, int]) -> None:
        if generation not in self.created:
            self.adopted.setdefault(generation, user)
        if status in TERMINAL:
            self.terminal_at.setdefault((user, generation), {})[position] = status

    @property
    def named(self) -> dict[str, str]:
        """Every run known to exist: created (answered 202) or adopted."""
        return {**self.adopted, **self.created}

    def verdict(self, resets_of: Callable[[str], int]) -> dict[str, Any]:
        """Every created run recorded as ended, and announced by terminal updates that all
        carry the recorded status. A run whose end no connection saw is only counted as
        unpublished when no connection of its user had a reset (which may have announced it lost).

        The same terminal status at more than one position is a *repeat* (counted, not a
        failure): the outbox announces an end again when its process was killed after
        publishing and before marking it announced, or raced a sweep after an outage
        (src/livegate/service/outbox.py), and clients treat generationUpdate as the run's
        state. Two *different* terminal statuses are a duplicate end (a failure), as is a
        status that disagrees with the record (mismatched)."""
        named = self.named
        unfinished = [g for g in named if self.records.get(g) not in TERMINAL]
        duplicated = [g for (_, g), at in self.terminal_at.items() if len(set(at.values())) > 1]
        repeated = [g for (_, g), at in self.terminal_at.items() if len(at) > 1 and len(set(at.values())) == 1]
        mismatched = [g for (u, g), at in self.terminal_at.items()
                      if any(status != self.records.get(g) for status in at.values())]
        unpublished = [g for g, u in named.items() if self.records.get(g) in TERMINAL
                       and (u, g) not in self.terminal_at and resets_of(u) == 0]
        leaked = [f"generation {g} of {named[g]} reached {u}" for (u, g) in self.terminal_at
                  if named.get(g, u) != u]
        problems = ([f"generation {g} did not end (record: {self.records.get(g)})" for g in unfinished[:10]]
                    + [f"generation {g}: terminal update at {sorted(self.terminal_at[(named[g], g)])}"
                       for g in duplicated[:10]]
                    + [f"generation {g}: a terminal update disagrees with its record ({self.records.get(g)})"
                       for g in mismatched[:10]]
                    + [f"generation {g}: ended {self.records[g]} but no connection was told" for g in unpublished[:10]]
                    + leaked[:10])
        return {"generations_created": len(self.created), "generations_adopted": len(named) - len(self.created),
                "create_outcomes": dict(self.create_outcomes),
                "generation_statuses": dict(Counter(self.records.values())),
                "generations_unfinished": len(unfinished), "terminal_duplicated": len(duplicated),
                "terminal_repeated": len(repeated),
                "terminal_mismatched": len(mismatched) + len(leaked), "terminal_unpublished": len(unpublished),
                "generation_problems": problems}


def _published_by_us(generation_id: str) -> bool:
    """The publishers' made-up generations are ``g<n>`` (Soak._item); the service names its own."""
    return generation_id[:1] == "g" and generation_id[1:].isdigit()


class Tab:
    """One user's connection: the client, its consumer task and its ledger record."""

    def __init__(self, url: str, token: Callable[[], str], conn: Connection, ledger: Ledger,
                 generations: Generations) -> None:
        self.conn = conn
        self.ledger = ledger
        self.generations = generations
        self.errors: Counter[str] = Counter()
        self.stopped: str | None = None
        self.client = LivegateClient(url, token, backoff_initial=0.05, backoff_max=0.5, on_frame=self._raw)
        self._task: asyncio.Task[None] | None = None

    def _raw(self, frame: str) -> None:
        data = _RAW.decode(frame)
        if "offset" in data and data.get("type") != "welcome":
            self.conn.raw(data["epoch"], data["offset"], data["type"], data.get("generationId"))

    async def start(self) -> None:
        await self.client.__aenter__()
        self._task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        try:
            async for message in self.client.messages():
                self._record(message)
        except ClientStopped as exc:
            self.stopped = str(exc)

    def _record(self, message: Any) -> None:
        conn = self.conn
        match message:
            case messages.Welcome():
                recovered = message.recovered if isinstance(message.recovered, bool) else None
                conn.welcome(message.epoch, message.offset, recovered)
            case messages.Notification():
                conn.event(message.epoch, message.offset, message.message, "notification")
            case messages.GenerationProgress():
                supersedes = message.supersedes if isinstance(message.supersedes, list) else ()
                event_id = str(message.message)
                if not _published_by_us(message.generation_id):  # the service's own progress
                    event_id = self._service_event("gp", message, PROGRESS)
                conn.event(message.epoch, message.offset, event_id, PROGRESS, message.generation_id, supersedes)
            case messages.GenerationUpdate():
                event_id = self._service_event(f"gu:{message.status}", message, "generationUpdate")
                self.generations.seen(conn.user, message.generation_id, message.status,
                                      (message.epoch, message.offset))
                conn.event(message.epoch, message.offset, event_id, "generationUpdate", message.generation_id)
            case messages.Error():
                self.errors[message.code] += 1

    def _service_event(self, prefix: str, message: Any, kind: str) -> str:
        """The service publishes its events itself: the first connection to see one enters it
        in the ledger as acknowledged at its position (its id names what it carries, so another
        connection given something else there is a mismatch, and another user's is a phantom)."""
        event_id = f"{prefix}:{message.generation_id}:{message.epoch}:{message.offset}"
        if event_id not in self.ledger.sent:
            # Its queued update may arrive before the create's answer names the run: then this
            # connection's user stands in (Generations.verdict checks updates reach only the owner).
            user = self.generations.created.get(message.generation_id, self.conn.user)
            self.ledger.will_publish(event_id, user, kind, message.generation_id)
            self.ledger.acknowledged(event_id, message.epoch, message.offset)
        return event_id

    async def close(self) -> None:
        await self.client.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


class Soak:
    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.s = settings
        self.rng = random.Random(settings.seed)
        self.workdir = workdir
        self.ledger = Ledger()
        self.chaos = Chaos()
        self.generations = Generations()
        self.redis = RedisServer(appendonly=True, startup_timeout=30)
        self.postgres = PostgresServer(startup_timeout=60) if settings.postgres else None
        self.database_url: str | None = None
        self._postgres_lock = asyncio.Lock()
        self.gateways: list[GatewayProcess] = []
        self.proxies: list[ChaosProxy] = []
        self.tabs: list[Tab] = []
        self.users = [f"soak-{settings.seed}-{i}" for i in range(settings.users)]
        self.ids = itertools.count(1)
        self.generation: dict[str, tuple[str, int]] = {}  # user -> (current generation, its progress count)
        self.publish_outcomes: Counter[str] = Counter()
        self.server_counters: Counter[str] = Counter()  # SERVER_COUNTERS over every gateway's life
        self._busy: set[int] = set()  # gateways being killed/restarted
        self._redis_lock = asyncio.Lock()  # one Redis restart at a time
        self._flooding = False
        self.started = time.monotonic()
        self.not_drained = 0
        self._background: set[asyncio.Task[None]] = set()

    # -- start and stop -----------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {"LIVEGATE_REDIS_URL": self.redis.url, "LIVEGATE_LOG_LEVEL": "WARNING",
               "LIVEGATE_QUEUE_MAX_BYTES": str(self.s.queue_max_bytes),
               "LIVEGATE_HISTORY_MAX_EVENTS": str(self.s.history_max_events),
               "LIVEGATE_SHUTDOWN_GRACE": "2"}
        if self.database_url is not None:
            env |= {"LIVEGATE_DATABASE_URL": self.database_url,
                    "LIVEGATE_TAKEOVER_SECONDS": str(self.s.takeover_seconds)}
        return env

    async def start(self) -> None:
        await asyncio.to_thread(self.redis.start)
        if self.postgres is not None:
            await asyncio.to_thread(self.postgres.start)
            self.database_url = await asyncio.to_thread(self.postgres.create_database, "soak")
        self.gateways = [GatewayProcess(self.workdir / f"gw{i}", env=self.env(), startup_timeout=STARTUP_TIMEOUT)
                         for i in range(self.s.gateways)]
        await asyncio.gather(*(asyncio.to_thread(gw.start) for gw in self.gateways))
        ports = [gw.port for gw in self.gateways]
        self.proxies = [await ChaosProxy(ports[i:] + ports[:i]).start() for i in range(len(ports))]
        token_of = self.gateways[0].token
        for u, user in enumerate(self.users):
            for c in range(self.s.connections):
                proxy = self.proxies[(u + c) % len(self.proxies)]
                conn = self.ledger.connection(user, f"{user}/tab{c}")
                tab = Tab(f"ws://127.0.0.1:{proxy.port}/v1/ws", lambda user=user: token_of(user, 3600), conn,
                          self.ledger, self.generations)
                self.tabs.append(tab)
        await asyncio.gather(*(tab.start() for tab in self.tabs))
        await self._wait(lambda: all(tab.conn.welcomes for tab in self.tabs), 30, "every first welcome")

    async def stop(self) -> None:
        await asyncio.gather(*(tab.close() for tab in self.tabs), return_exceptions=True)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for proxy in self.proxies:
            await proxy.stop()
        await asyncio.gather(*(asyncio.to_thread(gw.terminate) for gw in self.gateways), return_exceptions=True)
        await asyncio.to_thread(self.redis.close)
        if self.postgres is not None:
            await asyncio.to_thread(self.postgres.close)

    @staticmethod
    async def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
            await asyncio.sleep(0.1)

    # -- publishing ---------------------------------------------------------------------------

    def _item(self, user: str, kind: str | None = None) -> dict[str, Any]:
        event_id = f"ev{next(self.ids)}"
        if kind == "notification" or (kind is None and self.rng.random() < 0.7):
            self.ledger.will_publish(event_id, user, "notification")
            return {"userId": user, "event": {"type": "notification", "level": "info", "message": event_id}}
        generation, count = self.generation.get(user, (f"g{next(self.ids)}", 0))
        if count >= 12:
            generation, count = f"g{next(self.ids)}", 0
        self.generation[user] = (generation, count + 1)
        self.ledger.will_publish(event_id, user, PROGRESS, generation)
        return {"userId": user, "event": {"type": "generationProgress", "generationId": generation,
                                          "fraction": min(1.0, (count + 1) / 12), "message": event_id}}

    async def publisher(self, deadline: float, share: float) -> None:
        async with httpx.AsyncClient(timeout=PUBLISH_TIMEOUT) as client:
            while time.monotonic() < deadline:
                user = self.rng.choice(self.users)
                batch = [self._item(user if self.rng.random() < 0.5 else self.rng.choice(self.users))
                         for _ in range(self.rng.randint(1, 10))]
                await self.publish(client, self.rng.choice(self.gateways), batch)
                await asyncio.sleep(len(batch) / (self.s.rate * share))

    async def publish(self, client: httpx.AsyncClient, gw: GatewayProcess, batch: list[dict[str, Any]]) -> bool:
        """One ``POST /v1/events``; records each item's outcome. ``True`` when all were acknowledged."""
        ids = [item["event"]["message"] for item in batch]
        try:
            response = await client.post(f"{gw.http_url}/v1/events", json={"events": batch},
                                         headers={"Authorization": f"Bearer {gw.service_token}"})
        except (httpx.ConnectError, httpx.ConnectTimeout):
            outcome, results = "refused", []  # the request never left
        except httpx.HTTPError:
            outcome, results = "unknown", []
        else:
            body = response.json() if response.headers.get("content-type", "").endswith("json") else {}
            results = body.get("results") or []
            outcome = "ok" if response.is_success else ("unknown" if response.status_code >= 500 else "refused")
            if response.status_code < 500 and not response.is_success:
                self.chaos.log.append(f"publish answered {response.status_code}: {response.text[:200]}")
        for event_id, result in zip(ids, results, strict=False):
            self.ledger.acknowledged(event_id, result["epoch"], result["offset"])
        for event_id in ids[len(results):]:
            self.ledger.unknown(event_id) if outcome == "unknown" else self.ledger.refused(event_id)
        self.publish_outcomes[outcome] += 1
        return outcome == "ok"

    async def creator(self, deadline: float) -> None:
        """Users create short demo runs through random gateways (each takes a few seconds, so
        kills and database restarts meet runs that are queued, running and finishing)."""
        if self.postgres is None or self.s.generation_rate <= 0:
            return
        async with httpx.AsyncClient(timeout=PUBLISH_TIMEOUT) as client:
            while time.monotonic() < deadline:
                await self.create(client, self.rng.choice(self.users), self.rng.choice(self.gateways))
                await asyncio.sleep(self.rng.expovariate(self.s.generation_rate))

    async def create(self, client: httpx.AsyncClient, user: str, gw: GatewayProcess) -> None:
        inputs = {"prompt": f"soak {user}", "durationSeconds": round(self.rng.uniform(0.5, 4.0), 2),
                  "steps": self.rng.randint(2, 8), "outputs": ["text"]}
        try:
            response = await client.post(f"{gw.http_url}/v1/generations", json={"toolId": "demo", "inputs": inputs},
                                         headers={"Authorization": f"Bearer {gw.token(user, 600)}"})
        except httpx.HTTPError:
            self.generations.create_outcomes["no answer"] += 1  # a run may exist: adopted if its updates come
            return
        if response.status_code == 202:
            self.generations.created[response.json()["id"]] = user
        self.generations.create_outcomes[str(response.status_code)] += 1

    async def settle(self) -> None:
        """Wait (bounded) until every created run's record has ended and its end was seen."""
        named = self.generations.named
        if not named:
            return
        deadline = time.monotonic() + self.s.drain_timeout
        pending = set(named)
        async with httpx.AsyncClient(timeout=PUBLISH_TIMEOUT) as client:
            while pending and time.monotonic() < deadline:
                for gen in sorted(pending):
                    user, gw = named[gen], self.rng.choice(self.gateways)
                    try:
                        response = await client.get(f"{gw.http_url}/v1/generations/{gen}",
                                                    headers={"Authorization": f"Bearer {gw.token(user, 600)}"})
                    except httpx.HTTPError:
                        continue
                    if response.status_code == 200:
                        self.generations.records[gen] = status = response.json()["status"]
                        if status in TERMINAL and (user, gen) in self.generations.terminal_at:
                            pending.discard(gen)
                await asyncio.sleep(0.25)
        unfinished = sum(1 for g in pending if self.generations.records.get(g) not in TERMINAL)
        self.chaos.log.append(f"{self._t():6.1f}s generations settled: {len(pending)} unseen or unfinished "
                              f"({unfinished} unfinished)")

    async def scrape(self, gw: GatewayProcess) -> None:
        """Add the gateway's own counters (they restart at 0 with the process) to the totals."""
        try:
            async with httpx.AsyncClient(timeout=1.0) as client:
                text = (await client.get(f"{gw.http_url}/metrics")).text
        except httpx.HTTPError:
            return
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in SERVER_COUNTERS:
                self.server_counters[SERVER_COUNTERS[name]] += float(value)

    # -- chaos --------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def kill_and_restart(self) -> None:
        candidates = [i for i, gw in enumerate(self.gateways) if i not in self._busy and gw.running()]
        if len(candidates) < 2:  # keep one gateway up
            return
        i = self.rng.choice(candidates)
        self._busy.add(i)
        down_for = self.rng.uniform(0.5, 4.0)
        try:
            await self.scrape(self.gateways[i])  # what it counted until now (a kill loses it)
            await asyncio.to_thread(self.gateways[i].kill)
            self.chaos.kills += 1
            self.chaos.log.append(f"{self._t():6.1f}s SIGKILL gateway {i}, down {down_for:.1f}s")
            await asyncio.sleep(down_for)
            await asyncio.to_thread(self.gateways[i].start)
        finally:
            self._busy.discard(i)

    async def restart_redis(self) -> None:
        down_for = self.rng.uniform(0.2, 2.0)
        # Half the restarts are a crash: with appendonly, Redis write()s the AOF before it
        # answers, so a SIGKILL (not a power cut) loses nothing acknowledged either.
        crash = self.rng.random() < 0.5
        async with self._redis_lock:
            await asyncio.to_thread(self.redis.kill if crash else self.redis.stop)
            self.chaos.redis_restarts += 1
            self.chaos.log.append(f"{self._t():6.1f}s Redis {'SIGKILL' if crash else 'SIGTERM'}, "
                                  f"down {down_for:.1f}s")
            await asyncio.sleep(down_for)
            await asyncio.to_thread(self.redis.start)

    async def restart_postgres(self) -> None:
        """PostgreSQL crashes or stops for a moment: creates answer 503, runs retry their writes
        and every process's dispatch and takeover resume when it is back."""
        assert self.postgres is not None
        down_for = self.rng.uniform(0.5, 3.0)
        crash = self.rng.random() < 0.5
        async with self._postgres_lock:
            await asyncio.to_thread(self.postgres.kill if crash else self.postgres.stop)
            self.chaos.postgres_restarts += 1
            self.chaos.log.append(f"{self._t():6.1f}s PostgreSQL {'SIGKILL' if crash else 'stop'}, down {down_for:.1f}s")
            await asyncio.sleep(down_for)
            await asyncio.to_thread(self.postgres.start)

    def cut(self) -> None:
        proxy = self.rng.choice(self.proxies)
        self.chaos.cuts += proxy.cut(self.rng.randint(1, 4), self.rng)

    def slow(self) -> None:
        links = [link for proxy in self.proxies for link in proxy.open_links()]
        for link in self.rng.sample(links, min(len(links), self.rng.randint(1, 3))):
            proxy = next(p for p in self.proxies if link in p.links)
            proxy.slow(link, seconds=self.rng.uniform(1.0, 6.0), rate=self.rng.uniform(300, 3000))
            self.chaos.slow_episodes += 1

    async def rewind(self, span: float) -> None:
        """Copy Redis's AOF now, and a while later restart Redis from that copy: the writes in
        between are gone while the streams' meta hashes (their epochs) survive, as after a
        failover to a replica that missed them. The contract wants that to show as a new epoch."""
        await asyncio.sleep(self.rng.uniform(0.3, 0.4) * span)
        aof = self.redis.dir / "appendonlydir"
        copy = self.workdir / "aof-copy"
        await asyncio.to_thread(shutil.copytree, aof, copy)
        self.chaos.log.append(f"{self._t():6.1f}s copied the AOF")
        await asyncio.sleep(self.rng.uniform(0.2, 0.3) * span)
        async with self._redis_lock:  # after a restart in progress
            await asyncio.to_thread(self.redis.stop)
            await asyncio.to_thread(shutil.rmtree, aof)
            await asyncio.to_thread(shutil.copytree, copy, aof)
            await asyncio.to_thread(self.redis.start)
        self.chaos.rewinds += 1
        self.chaos.log.append(f"{self._t():6.1f}s Redis restarted from the older AOF copy (rewind)")

    async def _flood_once(self) -> None:
        self._flooding = True
        try:
            await self.flood()
        finally:
            self._flooding = False

    async def flood(self) -> None:
        """Slow every link of one proxy for a few seconds and publish ~``flood_bytes`` of
        16 kB notifications to a user holding a connection there, in small paced batches (one
        batch stays under the outbox bound, so the user's fast connections keep up)."""
        p = self.rng.randrange(len(self.proxies))
        proxy = self.proxies[p]
        seconds = self.rng.uniform(4.0, 8.0)
        for link in proxy.open_links():
            proxy.slow(link, seconds=seconds, rate=self.rng.uniform(200, 2000))
        users = [user for u, user in enumerate(self.users)
                 if any((u + c) % len(self.proxies) == p for c in range(self.s.connections))]
        user = self.rng.choice(users)
        self.chaos.floods += 1
        self.chaos.log.append(f"{self._t():6.1f}s flood {user} behind slowed proxy {p} for {seconds:.1f}s")
        pad = "x" * 16000
        deadline = time.monotonic() + seconds
        acknowledged = 0
        async with httpx.AsyncClient(timeout=PUBLISH_TIMEOUT) as client:
            for _ in range(max(1, self.s.flood_bytes // (8 * len(pad)))):
                if time.monotonic() > deadline:
                    break
                batch = [self._item(user, "notification") for _ in range(8)]
                for item in batch:
                    item["event"]["title"] = pad
                if await self.publish(client, self.rng.choice(self.gateways), batch):
                    acknowledged += len(batch) * len(pad)
                await asyncio.sleep(0.02)
        self.chaos.log.append(f"{self._t():6.1f}s flood of {user} ended: {acknowledged / 1e6:.1f} MB acknowledged")

    async def chaos_loop(self, deadline: float) -> None:
        """Each fault kind at random moments (exponential gaps around its mean), the first of
        each within the first 30% of the run so even a short run has every kind."""
        span = max(1.0, deadline - time.monotonic())
        means = {"kill": max(6.0, span / 8), "redis": max(10.0, span / 4), "cut": 2.5, "slow": 3.0,
                 "flood": max(8.0, span / 12)}
        if self.s.flood_bytes <= 0:
            del means["flood"]
        if self.postgres is not None:
            means["postgres"] = max(12.0, span / 4)
        start = time.monotonic()
        if self.s.rewind:
            self._spawn(self.rewind(span))
        next_at = {kind: start + self.rng.uniform(0.05, 0.3) * span for kind in means}
        while True:
            kind = min(next_at, key=next_at.__getitem__)
            if next_at[kind] >= deadline:
                break
            await asyncio.sleep(max(0.0, next_at[kind] - time.monotonic()))
            next_at[kind] += self.rng.expovariate(1 / means[kind])
            if kind == "kill":
                self._spawn(self.kill_and_restart())
            elif kind == "redis" and not self._redis_lock.locked():
                self._spawn(self.restart_redis())
            elif kind == "postgres" and not self._postgres_lock.locked():
                self._spawn(self.restart_postgres())
            elif kind == "cut":
                self.cut()
            elif kind == "slow":
                self.slow()
            elif kind == "flood" and not self._flooding:
                self._spawn(self._flood_once())

    def _t(self) -> float:
        return time.monotonic() - self.started

    # -- the run ------------------------------------------------------------------------------

    async def drain(self) -> dict[str, tuple[str, int]]:
        """Faults stop; every process is up again; one marker per user; wait for every tab."""
        for proxy in self.proxies:
            proxy.heal()
        await asyncio.gather(*self._background, return_exceptions=True)
        if not self.redis.running():
            await asyncio.to_thread(self.redis.start)
        if self.postgres is not None and not self.postgres.running():
            await asyncio.to_thread(self.postgres.start)
        await asyncio.gather(*(asyncio.to_thread(gw.start) for gw in self.gateways if not gw.running()))
        await self.settle()  # before the markers: every run's updates are then below them
        finals: dict[str, tuple[str, int]] = {}
        deadline = time.monotonic() + self.s.drain_timeout
        async with httpx.AsyncClient(timeout=PUBLISH_TIMEOUT) as client:
            for user in self.users:
                while user not in finals and time.monotonic() < deadline:
                    item = self._item(user)
                    if await self.publish(client, self.rng.choice(self.gateways), [item]):
                        finals[user] = self.ledger.sent[item["event"]["message"]].position  # type: ignore[assignment]
                    else:
                        await asyncio.sleep(0.2)
        for gw in self.gateways:
            await self.scrape(gw)
        if len(finals) < len(self.users):
            raise TimeoutError("could not publish the drain markers")

        def caught_up(tab: Tab) -> bool:
            position = tab.conn.position
            final = finals[tab.conn.user]
            return tab.stopped is not None or (position is not None and position[0] == final[0]
                                               and position[1] >= final[1])

        pending = list(self.tabs)
        while pending and time.monotonic() < deadline:
            pending = [tab for tab in pending if not caught_up(tab)]
            await asyncio.sleep(0.25)
        self.not_drained = len(pending)
        return finals

    async def run(self) -> tuple[Verdict, dict[str, Any]]:
        self.started = time.monotonic()
        await self.start()
        print(f"started: redis pid {self.redis.pid}, gateways {[gw.pid for gw in self.gateways]}, "
              f"{len(self.tabs)} connections ({self.s.users} users x {self.s.connections}) "
              f"in {self._t():.1f}s", flush=True)
        chaos_started = time.monotonic()
        deadline = chaos_started + self.s.seconds
        await asyncio.gather(self.publisher(deadline, 0.5), self.publisher(deadline, 0.5), self.creator(deadline),
                             self.chaos_loop(deadline))
        chaos_ended = time.monotonic() - chaos_started
        finals = await self.drain()
        print(f"drained in {time.monotonic() - chaos_started - chaos_ended:.1f}s", flush=True)
        verdict = self.ledger.verdict(finals)
        return verdict, self.figures(verdict, chaos_ended)

    def figures(self, verdict: Verdict, chaos_seconds: float) -> dict[str, Any]:
        codes: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        for tab in self.tabs:
            codes.update("none" if c is None else str(c) for c in tab.client.close_codes)
            errors.update(tab.errors)
        figures = asdict(verdict)
        problems = figures.pop("problems")
        resets: Counter[str] = Counter()
        for tab in self.tabs:
            resets[tab.conn.user] += tab.conn.resets
        generations = self.generations.verdict(resets.__getitem__)
        problems += generations.pop("generation_problems")
        figures.update(
            seed=self.s.seed, seconds=round(chaos_seconds, 1), users=self.s.users, connections=len(self.tabs),
            gateways=self.s.gateways, kills=self.chaos.kills, redis_restarts=self.chaos.redis_restarts,
            proxy_cuts=self.chaos.cuts, slow_episodes=self.chaos.slow_episodes, floods=self.chaos.floods,
            rewinds=self.chaos.rewinds, postgres=self.postgres is not None,
            postgres_restarts=self.chaos.postgres_restarts, **generations,
            reconnects=sum(max(0, tab.conn.welcomes - 1) for tab in self.tabs),
            close_codes=dict(sorted(codes.items())), errors=dict(sorted(errors.items())),
            slow_consumer_closes=int(self.server_counters["slow_consumer_closes"]),
            events_conflated_by_servers=int(self.server_counters["events_conflated"]), publish_calls=dict(self.publish_outcomes),
            not_drained=self.not_drained, stopped_clients=sum(1 for tab in self.tabs if tab.stopped),
            problems=problems, chaos_log=self.chaos.log[:200])
        return figures


def report(figures: dict[str, Any]) -> str:
    lines = [
        f"chaos soak: seed {figures['seed']}, {figures['seconds']} s of chaos, {figures['gateways']} gateways, "
        f"{figures['users']} users, {figures['connections']} connections",
        f"  events published (acknowledged) {figures['published']}, unknown outcome {figures['unknown']} "
        f"({figures['unknown_appended']} of them appended), refused {figures['refused']}",
        f"  delivered {figures['delivered']} (owed by the final segments {figures['expected']}; "
        f"conflated {figures['conflated']})",
        f"  kills {figures['kills']}, Redis restarts {figures['redis_restarts']}, proxy cuts {figures['proxy_cuts']}, "
        f"slow episodes {figures['slow_episodes']}, floods {figures['floods']}"
        + (f", AOF rewinds {figures['rewinds']}" if figures["rewinds"] else "")
        + (f", PostgreSQL restarts {figures['postgres_restarts']}" if figures["postgres"] else ""),
        f"  reconnects {figures['reconnects']}, slow-consumer closes {figures['slow_consumer_closes']} "
        f"(counted by the gateways; conflated there {figures['events_conflated_by_servers']}), "
        f"close codes {figures['close_codes']}, errors {figures['errors']}",
        f"  resets announced {figures['resets']} (events announced lost {figures['announced_lost']}), "
        f"raw duplicates dropped by the client {figures['raw_duplicates_dropped']}",
        f"  lost {figures['lost']}, duplicated {figures['duplicated']}, mismatched {figures['mismatched']}, "
        f"not drained {figures['not_drained']}, stopped clients {figures['stopped_clients']}",
    ]
    if figures["postgres"]:
        lines.append(
            f"  generations created {figures['generations_created']} (create answers {figures['create_outcomes']}; "
            f"adopted from their updates {figures['generations_adopted']}), "
            f"ended {figures['generation_statuses']}; unfinished {figures['generations_unfinished']}, "
            f"terminal updates duplicated {figures['terminal_duplicated']}, "
            f"repeated (same status, allowed) {figures['terminal_repeated']}, mismatched "
            f"{figures['terminal_mismatched']}, unpublished {figures['terminal_unpublished']}")
    lines += [f"  problem: {p}" for p in figures["problems"]]
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> Settings:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].rstrip(":"), formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=3.0, help="length of the chaos phase (default 3)")
    p.add_argument("--seconds", type=float, help="length of the chaos phase in seconds (overrides --minutes)")
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--connections", type=int, default=3, help="connections per user")
    p.add_argument("--gateways", type=int, default=3)
    p.add_argument("--rate", type=float, default=150.0, help="events per second published")
    p.add_argument("--seed", type=int, help="RNG seed (default: random, printed)")
    p.add_argument("--queue-max-bytes", type=int, default=262144)
    p.add_argument("--flood-bytes", type=int, default=5_000_000, help="bytes per flood (0: none)")
    p.add_argument("--history-max-events", type=int, default=1000)
    p.add_argument("--drain-timeout", type=float, default=60.0)
    p.add_argument("--rewind", action="store_true",
                   help="once, restart Redis from an older copy of its AOF (a failover that lost writes)")
    p.add_argument("--no-postgres", dest="postgres", action="store_false",
                   help="Redis only: no PostgreSQL, no generations")
    p.add_argument("--generation-rate", type=float, default=1.0, help="demo generations created per second")
    p.add_argument("--takeover-seconds", type=float, default=3.0, help="LIVEGATE_TAKEOVER_SECONDS of the gateways")
    p.add_argument("--json", type=Path, help="write the figures here")
    a = p.parse_args(argv)
    seed = a.seed if a.seed is not None else int.from_bytes(os.urandom(4), "big")
    return Settings(seconds=a.seconds if a.seconds is not None else a.minutes * 60, users=a.users,
                    connections=a.connections, gateways=a.gateways, rate=a.rate, seed=seed,
                    queue_max_bytes=a.queue_max_bytes, flood_bytes=a.flood_bytes, history_max_events=a.history_max_events,
                    drain_timeout=a.drain_timeout, rewind=a.rewind, postgres=a.postgres,
                    generation_rate=a.generation_rate, takeover_seconds=a.takeover_seconds,
                    json_path=a.json)


async def amain(settings: Settings) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="livegate-soak-"))
    soak = Soak(settings, workdir)
    print(f"chaos soak: seed {settings.seed} (rerun with --seed {settings.seed}), {settings.seconds:.0f} s, "
          f"work dir {workdir}", flush=True)
    try:
        verdict, figures = await soak.run()
    finally:
        stopping = time.monotonic()
        await soak.stop()
        print(f"stopped in {time.monotonic() - stopping:.1f}s", flush=True)
    figures["date"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(report(figures))
    if settings.json_path is not None:
        settings.json_path.write_text(json.dumps(figures, indent=2) + "\n")
    failed = (not verdict.ok or figures["not_drained"] or figures["stopped_clients"]
              or figures.get("generations_unfinished") or figures.get("terminal_duplicated")
              or figures.get("terminal_mismatched") or figures.get("terminal_unpublished"))
    print("FAILED" if failed else "OK: nothing lost, nothing duplicated", flush=True)
    if not failed:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(amain(parse(argv)))


if __name__ == "__main__":
    sys.exit(main())
