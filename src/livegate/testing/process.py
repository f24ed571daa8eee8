"""A real ``livegate serve`` process on a free 127.0.0.1 port, for tests that need to
signal, kill or restart the gateway (graceful shutdown, ``kill -9``, multi-process on Redis,
browser tests that restart the server mid-run)::

    with GatewayProcess(tmp_path, env={"LIVEGATE_REDIS_URL": redis.url}) as gw:
        token = gw.token("alice")
        ...
        gw.terminate()            # SIGTERM: graceful (4000 to every client), bounded wait
        gw.start()                # same port and data dir
        gw.kill()                 # SIGKILL: nothing flushed

The child runs ``python -m livegate.cli serve`` with the test secrets of
:mod:`livegate.testing.gateway` (not in dev mode: ``serve`` refuses dev mode with real
secrets), so tokens minted here are accepted there. ``dev=True`` runs it in dev mode with
the dev-only defaults instead (``POST /v1/dev/token``, the sandbox's sign-in); :meth:`token`
and :attr:`service_token` follow. Its output goes to
``<data_dir>/gateway-<port>.log`` (printed by :meth:`log_tail` when a test wants to show it).
Start-up waits on ``GET /readyz`` answering 200, bounded by ``startup_timeout``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from livegate.config import DEV_JWT_SECRET, DEV_SERVICE_TOKEN
from livegate.protocol.auth import mint_token
from livegate.testing.gateway import TEST_SECRET, TEST_SERVICE_TOKEN
from livegate.testing.redis_server import free_port

__all__ = ["GatewayProcess", "GatewayProcessError"]


class GatewayProcessError(RuntimeError):
    """The gateway would not start (or stop) within its bounds; the message has its log."""


class GatewayProcess:
    """One ``livegate serve`` child process.

    :param data_dir: ``LIVEGATE_DATA_DIR`` (SQLite records, outputs); kept across restarts.
    :param env: more ``LIVEGATE_*`` settings (``LIVEGATE_REDIS_URL``, ``LIVEGATE_TOOLS_FILE``...).
    :param port: fixed port; default a free one, kept across restarts.
    :param dev: ``LIVEGATE_DEV=1`` with the dev-only secrets (not the test ones).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        startup_timeout: float = 60.0,  # a bound, not a wait: shared CI machines are slow to import
        stop_timeout: float = 15.0,
        dev: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra_env = dict(env or {})
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.dev = dev
        self.jwt_secret = DEV_JWT_SECRET if dev else TEST_SECRET
        self.service_token = DEV_SERVICE_TOKEN if dev else TEST_SERVICE_TOKEN
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: object | None = None

    # -- addresses ------------------------------------------------------------------------

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"gateway-{self.port}.log"

    def token(self, user_id: str, ttl_seconds: float = 600) -> str:
        return mint_token(self.jwt_secret, user_id, ttl_seconds=ttl_seconds)

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- lifecycle ------------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEGATE_")}
        env.update({
            "LIVEGATE_DEV": "1" if self.dev else "0",
            **({} if self.dev else {"LIVEGATE_JWT_SECRET": TEST_SECRET, "LIVEGATE_SERVICE_TOKEN": TEST_SERVICE_TOKEN}),
            "LIVEGATE_DATA_DIR": str(self.data_dir),
            "LIVEGATE_LOG_LEVEL": "INFO",
            "LIVEGATE_SHUTDOWN_GRACE": "3",
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.extra_env)
        return env

    def start(self) -> Self:
        """Start the child and wait until ``/readyz`` answers 200."""
        if self.running():
            return self
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap
        self._log_file = log
        self._process = subprocess.Popen(
            [sys.executable, "-m", "livegate.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.environment(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    self._reap()
                    raise GatewayProcessError(f"gateway exited during start-up:\n{self.log_tail()}")
                try:
                    if client.get(f"{self.http_url}/readyz").status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        self.kill()
        raise GatewayProcessError(f"gateway not ready within {self.startup_timeout}s:\n{self.log_tail()}")

    def terminate(self) -> int:
        """SIGTERM (graceful shutdown) and wait for the exit; SIGKILL after ``stop_timeout``.
        Returns the exit status."""
        return self._stop(signal.SIGTERM)

    def kill(self) -> int:
        """SIGKILL: the process dies without flushing or closing anything."""
        return self._stop(signal.SIGKILL)

    def restart(self) -> Self:
        self.terminate()
        return self.start()

    def _stop(self, sig: signal.Signals) -> int:
        process = self._process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self._reap()
        return int(process.returncode)

    def _reap(self) -> None:
        self._process = None if self._process is None or self._process.poll() is not None else self._process
        if self._log_file is not None:
            self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.kill() if exc_type is not None else self.terminate()
