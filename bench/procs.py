"""Server processes under test: start, pin to a core, read CPU time and RSS, stop by PID.

A target is one server process, or (``livegate-redis2``) two ``livegate serve`` processes on
one real ``redis-server``: then ``pids``/``ws_ports``/``publish_ports`` list both gateways and
``redis_pid`` is the Redis child.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from livegate.testing.gateway import TEST_SECRET, TEST_SERVICE_TOKEN
from livegate.testing.process import GatewayProcess
from livegate.testing.redis_server import RedisServer

BENCH_DIR = Path(__file__).resolve().parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_nofile(wanted: int) -> int:
    """Raise RLIMIT_NOFILE (children inherit it); return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the whole process (all threads, dead ones included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (every thread's children)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return found


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid``, of its children it has reaped (``cutime`` + ``cstime``)
    and of its live descendants: a server that forks a process per connection (PostgreSQL's
    postmaster and its backends), including backends that exited meanwhile. The delta of two
    readings is the tree's CPU in between: a backend's time moves from "live" to "reaped"
    when it exits, and is counted once either way."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(f) for f in fields[11:15]) / CLOCK_TICKS
    for child in children(pid):
        with contextlib.suppress(OSError):
            total += tree_cpu_seconds(child)
    return total


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def pin(pid: int, cores: set[int]) -> None:
    """Pin every thread of ``pid`` (affinity is per thread on Linux)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.sched_setaffinity(int(task), cores)


@dataclass
class Target:
    """Where a server under test listens and how its clients speak.

    ``pid``/``ws_port``/``publish_port`` are the (first) server process; a target of several
    gateway processes lists all of them in ``pids``/``ws_ports``/``publish_ports`` (same order)
    and its Redis in ``redis_pid``. For a single process they default to the one process.
    """

    name: str
    pid: int
    ws_port: int
    ws_path: str
    publish_port: int
    dialect: str
    service_token: str
    pids: tuple[int, ...] = ()
    ws_ports: tuple[int, ...] = ()
    publish_ports: tuple[int, ...] = ()
    redis_pid: int | None = None

    def __post_init__(self) -> None:
        self.pids = self.pids or (self.pid,)
        self.ws_ports = self.ws_ports or (self.ws_port,)
        self.publish_ports = self.publish_ports or (self.publish_port,)

    def all_pids(self) -> tuple[int, ...]:
        """Every process of the target (gateways, then Redis if any)."""
        return self.pids + ((self.redis_pid,) if self.redis_pid is not None else ())


REDIS_GATEWAYS = {"livegate-redis2": 2}  # target name -> gateway processes on one Redis
SSE_TARGETS = ("livegate-sse",)  # livegate serve read over GET /v1/sse (asyncapi.yaml sseStream)
BEFORE_SUFFIX = "-before"  # run.py --baseline: a target's twin on livegate's source at a git ref


class Server:
    """A server under test in its own process; use as a context manager."""

    def __init__(self, name: str, data_dir: Path, *, env: dict[str, str] | None = None,
                 server_core: int | None = None) -> None:
        self.name = name
        self.data_dir = data_dir
        self.env = env or {}
        self.server_core = server_core
        self._gateway: GatewayProcess | None = None
        self._gateways: list[GatewayProcess] = []
        self._redis: RedisServer | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self.target: Target | None = None

    def __enter__(self) -> Target:
        # Children inherit the creator's affinity: spawn from the server core, then go back.
        mine = os.sched_getaffinity(0)
        try:
            if self.server_core is not None:
                os.sched_setaffinity(0, {self.server_core})
            try:
                self.target = self._start()
            finally:
                os.sched_setaffinity(0, mine)
            if self.server_core is not None:
                for pid in self.target.all_pids():
                    pin(pid, {self.server_core})
        except BaseException:
            self.__exit__()  # a half-started target (e.g. Redis up, one gateway failed): stop it all
            raise
        return self.target

    def _start_redis_gateways(self, count: int) -> Target:
        """``count`` ``livegate serve`` processes on one memory-only ``redis-server`` child."""
        self._redis = RedisServer()
        self._redis.start()
        assert self._redis.pid is not None
        env = {"LIVEGATE_REDIS_URL": self._redis.url, "LIVEGATE_LOG_LEVEL": "WARNING", **self.env}
        for i in range(count):
            gateway = GatewayProcess(self.data_dir / f"{self.name}-{i}", env=env, startup_timeout=30)
            self._gateways.append(gateway)  # before start(): stopped in __exit__ even if start fails
            gateway.start()
        pids = tuple(g.pid for g in self._gateways if g.pid is not None)
        ports = tuple(g.port for g in self._gateways)
        assert len(pids) == count
        return Target(self.name, pids[0], ports[0], "/v1/ws", ports[0], "livegate", TEST_SERVICE_TOKEN,
                      pids=pids, ws_ports=ports, publish_ports=ports, redis_pid=self._redis.pid)

    def _start(self) -> Target:
        redis_gateways = REDIS_GATEWAYS.get(self.name.removesuffix(BEFORE_SUFFIX))  # --baseline's twin too
        if redis_gateways:
            return self._start_redis_gateways(redis_gateways)
        if self.name == "livegate@granian":
            port = free_port()
            env = GatewayProcess(self.data_dir / self.name, env={"LIVEGATE_LOG_LEVEL": "WARNING", **self.env},
                                 port=port).environment()
            log = open(self.data_dir / f"{self.name}.log", "ab")  # noqa: SIM115 - closed below
            granian = Path(sys.executable).parent / "granian"
            self._popen = subprocess.Popen(
                [str(granian), "--interface", "asgi", "--loop", "uvloop", "--workers", "1", "--runtime-mode", "st",
                 "--runtime-threads", "1", "--no-log", "--host", "127.0.0.1", "--port", str(port),
                 "bench.servers.livegate_granian:app"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=BENCH_DIR.parent)
            log.close()
            self._wait_http(f"http://127.0.0.1:{port}/readyz")
            # granian supervises one worker process: that one serves, measure it.
            children = Path(f"/proc/{self._popen.pid}/task/{self._popen.pid}/children").read_text().split()
            worker = int(children[0]) if children else self._popen.pid
            return Target(self.name, worker, port, "/v1/ws", port, "livegate", TEST_SERVICE_TOKEN)
        if self.name.startswith("livegate@"):  # the same app on another uvicorn WebSocket stack
            port = free_port()
            env = GatewayProcess(self.data_dir / self.name, env={"LIVEGATE_LOG_LEVEL": "WARNING", **self.env},
                                 port=port).environment()
            log = open(self.data_dir / f"{self.name}.log", "ab")  # noqa: SIM115 - closed below
            self._popen = subprocess.Popen(
                [sys.executable, str(BENCH_DIR / "servers" / "livegate_alt.py"), "--port", str(port),
                 "--ws", self.name.split("@", 1)[1]],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
            log.close()
            self._wait_http(f"http://127.0.0.1:{port}/readyz")
            return Target(self.name, self._popen.pid, port, "/v1/ws", port, "livegate", TEST_SERVICE_TOKEN)
        if self.name.startswith("livegate"):
            env = {"LIVEGATE_LOG_LEVEL": "WARNING", **self.env}
            self._gateway = GatewayProcess(self.data_dir / self.name, env=env, startup_timeout=30)
            self._gateway.start()
            assert self._gateway.pid is not None
            # livegate-sse: the same process, its clients on SSE streams instead of WebSockets
            sse = self.name.removesuffix(BEFORE_SUFFIX) in SSE_TARGETS
            return Target(self.name, self._gateway.pid, self._gateway.port, "/v1/sse" if sse else "/v1/ws",
                          self._gateway.port, "sse" if sse else "livegate", TEST_SERVICE_TOKEN)
        port = free_port()
        log = open(self.data_dir / f"{self.name}.log", "ab")  # noqa: SIM115 - closed at exit
        if self.name == "floor":
            publish_port = free_port()
            argv = [sys.executable, str(BENCH_DIR / "servers" / "floor.py"), "--port", str(port),
                    "--publish-port", str(publish_port)]
            path, dialect, probe = "/", "livegate", None
        elif self.name == "socketio":
            publish_port = port
            argv = [sys.executable, str(BENCH_DIR / "servers" / "sio.py"), "--port", str(port)]
            path, dialect, probe = "/socket.io/?EIO=4&transport=websocket", "socketio", f"http://127.0.0.1:{port}/"
        else:
            raise ValueError(self.name)
        argv += ["--secret", TEST_SECRET, "--service-token", TEST_SERVICE_TOKEN]
        self._popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {(self.data_dir / f'{self.name}.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", publish_port), timeout=0.5):
                    pass
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    pass
                if probe is not None:
                    httpx.get(probe, timeout=1)
                return Target(self.name, self._popen.pid, port, path, publish_port, dialect, TEST_SERVICE_TOKEN)
            except (OSError, httpx.HTTPError):
                time.sleep(0.05)
        self._popen.kill()
        raise RuntimeError(f"{self.name} did not start within 30 s")

    def _wait_http(self, url: str, timeout: float = 30.0) -> None:
        assert self._popen is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {(self.data_dir / f'{self.name}.log').read_text()[-2000:]}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self._popen.kill()
        raise RuntimeError(f"{self.name} not ready within {timeout} s")

    def __exit__(self, *exc: object) -> None:
        if self._gateway is not None:
            self._gateway.kill()  # the bench does not test shutdown; don't wait for drains
            self._gateway = None
        while self._gateways:
            self._gateways.pop().kill()  # by PID, bounded wait (GatewayProcess.stop_timeout)
        if self._redis is not None:
            redis, self._redis = self._redis, None
            redis.close()  # by PID: SIGTERM, SIGKILL after 5 s; removes its temp dir
        if self._popen is not None:
            if self._popen.poll() is None:
                self._popen.send_signal(signal.SIGKILL)
            self._popen.wait(10)
            self._popen = None
