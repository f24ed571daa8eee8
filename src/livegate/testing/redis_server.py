"""A real ``redis-server`` on a free local port, for tests and local experiments.

::

    with RedisServer() as server:          # --save "" --appendonly no: memory only
        bus = RedisBus(server.url)
        ...
        server.stop()                      # outage: SIGTERM, then SIGKILL (bounded)
        server.start()                     # same port; a memory-only server comes back empty
        server.restart(keep_data=False)    # same port, data wiped even with appendonly

``RedisServer(appendonly=True)`` persists to an append-only file in its temp dir, so a
``restart()`` keeps the data (the "Redis restarted, nothing lost" case). ``freeze()`` /
``thaw()`` send SIGSTOP / SIGCONT: a server that accepts nothing and answers nothing,
the case socket timeouts exist for.

The binary is looked up on ``PATH`` (then ``/usr/bin/redis-server``); when it is missing
:class:`RedisServerNotFound` says how to install it. Tests that need Redis fail rather
than skip without it: CI installs ``redis-server``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = ["RedisSentinel", "RedisServer", "RedisServerError", "RedisServerNotFound", "find_redis_server",
           "free_port"]


_FALLBACK_DIR = "/usr/bin"


class RedisServerError(RuntimeError):
    """The server would not start or stop within its bounds."""


class RedisServerNotFound(RedisServerError):
    """No ``redis-server`` binary: install it (Debian: ``apt-get install redis-server``)."""


def find_redis_server(name: str = "redis-server") -> str:
    """The ``redis-server`` (or ``redis-sentinel``) binary's path, or :class:`RedisServerNotFound`."""
    found = shutil.which(name)
    if found:
        return found
    fallback = f"{_FALLBACK_DIR}/{name}"
    if os.access(fallback, os.X_OK):
        return fallback
    raise RedisServerNotFound(
        f"{name} not found on PATH nor at {fallback}; "
        f"install it (Debian/Ubuntu: apt-get install {name}) — the Redis tests need a real server"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _ping(host: str, port: int, timeout: float) -> bool:
    """One RESP ``PING`` over a plain socket; ``True`` on ``+PONG``."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` child process, bound to ``127.0.0.1`` on its own port.

    :param appendonly: persist to an AOF in the temp dir (so restarts keep the data).
    :param port: fixed port; default a free one, kept across restarts.
    :param startup_timeout: bound on waiting for the first ``PING`` answer.
    :param extra_args: more ``redis-server`` arguments (``["--maxmemory", "10mb"]``).
    """

    def __init__(
        self,
        *,
        appendonly: bool = False,
        port: int | None = None,
        host: str = "127.0.0.1",
        startup_timeout: float = 10.0,
        stop_timeout: float = 5.0,
        extra_args: tuple[str, ...] | list[str] = (),
        binary: str | None = None,
    ) -> None:
        self.binary = binary or find_redis_server()
        self.appendonly = appendonly
        self.host = host
        self.port = port or free_port(host)
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_args = tuple(extra_args)
        self.dir = Path(tempfile.mkdtemp(prefix="livegate-redis-"))
        self._process: subprocess.Popen[bytes] | None = None
        self._frozen = False

    # -- addresses ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the server (on this object's port) and wait until it answers ``PING``."""
        if self.running():
            return self
        args = self.command()
        self._process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                stderr = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                self._process = None
                raise RedisServerError(
                    f"redis-server exited at start (port {self.port}): {stderr.strip()} {self._log_tail()}"
                )
            if _ping(self.host, self.port, timeout=0.5):
                return self
            time.sleep(0.02)
        self._signal_stop(self._process)
        self._process = None
        raise RedisServerError(
            f"redis-server did not answer PING within {self.startup_timeout}s on port {self.port}: "
            f"{self._log_tail()}"
        )

    def command(self) -> list[str]:
        """The server's command line."""
        return [
            self.binary,
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--daemonize", "no",
            "--logfile", str(self.log_path),
            *self.extra_args,
        ]

    def stop(self) -> None:
        """Stop by PID: SIGTERM, then SIGKILL after ``stop_timeout``; waits for the exit."""
        process, self._process = self._process, None
        if process is not None:
            self._signal_stop(process)

    def kill(self) -> None:
        """SIGKILL: a crash, no shutdown work (an AOF keeps what was already written)."""
        process, self._process = self._process, None
        if process is not None:
            if self._frozen:
                self.thaw_process(process)
            process.kill()
            self._wait(process, self.stop_timeout)

    def restart(self, *, keep_data: bool = True) -> Self:
        """Stop and start on the same port. ``keep_data=False`` wipes persisted data first
        (a memory-only server loses its data on any restart)."""
        self.stop()
        if not keep_data:
            self.wipe_data()
        return self.start()

    def wipe_data(self) -> None:
        """Delete persisted data (AOF dir, RDB); only while stopped."""
        if self.running():
            raise RedisServerError("wipe_data() needs a stopped server")
        for child in self.dir.iterdir():
            if child == self.log_path:
                continue
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)

    def freeze(self) -> None:
        """SIGSTOP: the port stays open, nothing is answered (a hung server)."""
        if self._process is not None and not self._frozen:
            self._process.send_signal(signal.SIGSTOP)
            self._frozen = True

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        if self._process is not None and self._frozen:
            self.thaw_process(self._process)

    def thaw_process(self, process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGCONT)
        self._frozen = False

    def close(self) -> None:
        """Stop the server and remove its temp dir."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------

    def _signal_stop(self, process: subprocess.Popen[bytes]) -> None:
        if self._frozen:
            self.thaw_process(process)
        if process.poll() is None:
            process.terminate()
            if self._wait(process, self.stop_timeout):
                return
            process.kill()
            if not self._wait(process, self.stop_timeout):
                raise RedisServerError(f"redis-server pid {process.pid} survived SIGKILL")
        if process.stderr is not None:
            process.stderr.close()

    @staticmethod
    def _wait(process: subprocess.Popen[bytes], timeout: float) -> bool:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def _log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])


class RedisSentinel(RedisServer):
    """One ``redis-sentinel`` (Debian's package of that name) watching one primary as
    ``service``, with short timings for tests: the primary is down after ``down_after_ms``
    and a failover starts at once (quorum 1). :attr:`url` is the bus URL for the service."""

    def __init__(self, primary_port: int, *, service: str = "livegate", down_after_ms: int = 1000,
                 failover_timeout_ms: int = 10_000, **kwargs: Any) -> None:
        super().__init__(binary=kwargs.pop("binary", None) or find_redis_server("redis-sentinel"), **kwargs)
        self.service = service
        self.primary_port = primary_port
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms

    @property
    def url(self) -> str:
        return f"redis+sentinel://{self.host}:{self.port}/{self.service}"

    def command(self) -> list[str]:
        config = self.dir / "sentinel.conf"  # Sentinel rewrites it; a restart keeps what it learnt
        if not config.exists():
            config.write_text(
                f"sentinel monitor {self.service} {self.host} {self.primary_port} 1\n"
                f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}\n"
            )
        return [self.binary, str(config), "--bind", self.host, "--port", str(self.port), "--dir", str(self.dir),
                "--daemonize", "no", "--logfile", str(self.log_path), *self.extra_args]
