"""A real PostgreSQL server in a temp dir on a free local port, for tests and experiments.

::

    with PostgresServer() as server:       # initdb (trust auth, user livegate), pg_ctl start
        store = SqlStore(server.url)       # postgresql://livegate@127.0.0.1:PORT/livegate
        ...
        server.kill()                      # outage: SIGKILL of the postmaster
        server.start()                     # same port, same data (crash recovery runs)
        url = server.create_database("t1") # a fresh, empty database on the same server

Speed over durability against machine crashes: ``fsync=off``, ``full_page_writes=off``
(a test cluster never outlives its temp dir). ``synchronous_commit`` stays on: with it off
a SIGKILL of the server loses commits still in its WAL buffers, and the outage tests
check that committed rows survive ``kill()``. The unix socket lives in the temp dir, and
the server listens on ``127.0.0.1`` only: the machine's own PostgreSQL (5432) is never
touched.

The binaries (``initdb``, ``pg_ctl``, ``postgres``) are looked up on ``PATH``, then in
``/usr/lib/postgresql/*/bin`` (Debian's ``postgresql`` package, newest version first);
when missing, :class:`PostgresServerNotFound` says how to install them. PostgreSQL refuses
to run as root, so as root the server runs as an unprivileged account (``postgres`` when
it exists, else ``nobody``) that is given the temp dir.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from livegate.testing.redis_server import free_port

__all__ = ["PostgresServer", "PostgresServerError", "PostgresServerNotFound", "find_postgres_bindir"]

_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresServerError(RuntimeError):
    """The server would not start or stop within its bounds."""


class PostgresServerNotFound(PostgresServerError):
    """No PostgreSQL server binaries: install them (Debian: ``apt-get install postgresql``)."""


def find_postgres_bindir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``."""
    found = shutil.which("pg_ctl")
    if found:  # resolved: a symlink on PATH points into the directory that has createdb too
        bindir = Path(found).resolve().parent
        if all(os.access(bindir / name, os.X_OK) for name in ("initdb", "postgres", "createdb")):
            return bindir

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", path.parent.name)) or (0,)

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for bindir in candidates:
        if all(os.access(bindir / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres", "createdb")):
            return bindir
    raise PostgresServerNotFound(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH nor in "
        "/usr/lib/postgresql/*/bin; install them (Debian/Ubuntu: apt-get install postgresql, "
        "or `make system-deps`) — the PostgreSQL tests need a real server"
    )


def _run_as() -> pwd.struct_passwd | None:
    """The account to run the server as: ``None`` (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresServerError("running as root and neither a 'postgres' nor a 'nobody' account exists")


def _accepts(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class PostgresServer:
    """One PostgreSQL cluster in its own temp dir, bound to ``127.0.0.1`` on its own port.

    :param port: fixed port; default a free one, kept across restarts.
    :param startup_timeout: bound on ``initdb`` and on waiting for connections.
    :param stop_timeout: bound on a clean stop before the server is killed.
    """

    user = "livegate"
    database = "livegate"

    def __init__(self, *, port: int | None = None, host: str = "127.0.0.1", startup_timeout: float = 30.0,
                 stop_timeout: float = 10.0, bindir: Path | None = None) -> None:
        self.bindir = bindir or find_postgres_bindir()
        self.host = host
        self.port = port or free_port(host)
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.dir = Path(tempfile.mkdtemp(prefix="livegate-pg-"))
        self.data_dir = self.dir / "data"
        self.socket_dir = self.dir / "run"
        self.log_path = self.dir / "postgres.log"
        self._account = _run_as()
        self._initialised = False
        if self._account is not None:
            # mkdtemp made it 0700 root: the server's account must own it
            os.chown(self.dir, self._account.pw_uid, self._account.pw_gid)

    # -- addresses ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid (from ``postmaster.pid``), ``None`` when not running."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if self._alive(pid) else None  # postmaster.pid outlives a SIGKILL

    def running(self) -> bool:
        return self.pid is not None

    # -- lifecycle ------------------------------------------------------------------------

    def _command(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        account = self._account
        try:
            return subprocess.run(
                list(args), cwd=self.dir, capture_output=True, text=True, timeout=timeout, check=False,
                stdin=subprocess.DEVNULL,
                user=account.pw_uid if account else None, group=account.pw_gid if account else None,
                extra_groups=[] if account else None,
                env={**os.environ, "LC_ALL": "C", "PGTZ": "UTC"},
            )
        except subprocess.TimeoutExpired as exc:
            raise PostgresServerError(f"{args[0]} did not finish within {timeout}s: {self._log_tail()}") from exc

    def _initdb(self) -> None:
        done = self._command(
            str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", self.user, "--auth=trust",
            "--no-locale", "-E", "UTF8", "--no-sync", timeout=self.startup_timeout)
        if done.returncode != 0:
            raise PostgresServerError(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
        self.socket_dir.mkdir(exist_ok=True)
        if self._account is not None:
            os.chown(self.socket_dir, self._account.pw_uid, self._account.pw_gid)

    def start(self) -> Self:
        """Start (``initdb`` the first time, and create the ``livegate`` database) and wait,
        bounded, until it accepts connections."""
        if self.running():
            return self
        first = not self._initialised
        if first:
            self._initdb()
            self._initialised = True
        options = " ".join([
            f"-p {self.port}", f"-k {self.socket_dir}", f"-c listen_addresses={self.host}",
            "-c fsync=off", "-c full_page_writes=off",
            "-c max_connections=100", "-c shared_buffers=32MB",
        ])
        done = self._command(
            str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_path), "-o", options,
            "-w", "-t", str(max(1, round(self.startup_timeout))), "start", timeout=self.startup_timeout + 5)
        if done.returncode != 0:
            raise PostgresServerError(
                f"pg_ctl start failed on port {self.port}: {done.stderr.strip()} {self._log_tail()}")
        deadline = time.monotonic() + self.startup_timeout
        while not _accepts(self.host, self.port, 0.5):
            if time.monotonic() > deadline:
                raise PostgresServerError(f"PostgreSQL does not accept on port {self.port}: {self._log_tail()}")
            time.sleep(0.02)
        if first:
            try:
                self.create_database(self.database)
            except BaseException:
                self.stop()
                raise
        return self

    def create_database(self, name: str) -> str:
        """``CREATE DATABASE name`` (empty); its URL."""
        if not _DB_NAME.match(name):
            raise ValueError(f"not a plain database name: {name!r}")
        done = self._command(
            str(self.bindir / "createdb"), "-h", str(self.socket_dir), "-p", str(self.port), "-U", self.user,
            name, timeout=self.startup_timeout)
        if done.returncode != 0:
            raise PostgresServerError(f"createdb {name} failed: {done.stderr.strip()}")
        return self.url_for(name)

    def stop(self) -> None:
        """Clean stop (``pg_ctl stop -m fast``, bounded); killed if it does not stop."""
        if not self.running():
            return
        done = self._command(str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w",
                             "-t", str(max(1, round(self.stop_timeout))), "stop", timeout=self.stop_timeout + 5)
        if done.returncode != 0 and self.running():
            self.kill()

    def kill(self) -> None:
        """SIGKILL of the postmaster (a crash): connections drop at once; its backends
        notice and exit. ``start()`` afterwards runs crash recovery on the same data."""
        pid = self.pid
        if pid is None:
            return
        # Its backends, found before they are orphaned: a new postmaster refuses to start
        # while any of them still holds the cluster's shared memory.
        processes = [pid, *self._children(pid)]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + self.stop_timeout
        while any(self._alive(p) for p in processes):
            if time.monotonic() > deadline:
                raise PostgresServerError(f"postgres pid {pid} or its backends survived SIGKILL")
            time.sleep(0.02)
        # Every process of the cluster is gone, but the dead postmaster may linger as a
        # zombie until init reaps it, and a new one refuses to start while that pid
        # "exists": the lock files are stale, remove them.
        for stale in (self.data_dir / "postmaster.pid", self.socket_dir / f".s.PGSQL.{self.port}.lock",
                      self.socket_dir / f".s.PGSQL.{self.port}"):
            stale.unlink(missing_ok=True)

    def restart(self) -> Self:
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server and remove its temp dir."""
        with contextlib.suppress(PostgresServerError):
            self.stop()
        if self.running():
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        # a zombie is dead for our purpose (its parent, pg_ctl, has gone: init reaps it)
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
                return False
        return True

    @staticmethod
    def _children(pid: int) -> list[int]:
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(stat.read_text().rsplit(") ", 1)[1].split()[1]) == pid:
                    found.append(int(stat.parent.name))
        return found

    def _log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])
