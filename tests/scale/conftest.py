"""Three ``livegate serve`` processes on one Redis, started once per module (start-up is
the expensive part). Tests that share them carry an ``xdist_group`` mark so one worker
runs them in sequence; each test uses its own users, and puts back what it broke (a
killed gateway, a stopped Redis) — the ``cluster`` fixture checks that before each test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from livegate.testing.process import GatewayProcess
from livegate.testing.redis_server import RedisServer
from tests.scale._support import Balancer, LoopThread, start_gateways


@dataclass
class Cluster:
    redis: RedisServer
    gateways: list[GatewayProcess]
    net: LoopThread
    balancer: Balancer

    def restore(self) -> None:
        """Bring back whatever a test stopped: Redis first, then the gateways."""
        if not self.redis.running():
            self.redis.start()
        for gw in self.gateways:
            if not gw.running():
                gw.start()

    def logs(self) -> str:
        return "\n".join(f"--- gateway :{gw.port} (pid {gw.pid}) ---\n{gw.log_tail(40)}" for gw in self.gateways)


def _cluster(base: Path, *, appendonly: bool) -> Iterator[Cluster]:
    net = LoopThread()
    with RedisServer(appendonly=appendonly) as redis:
        gateways = start_gateways(base, 3, {"LIVEGATE_REDIS_URL": redis.url})
        balancer = Balancer(net, [gw.port for gw in gateways])
        try:
            yield Cluster(redis, gateways, net, balancer)
        finally:
            balancer.close()
            for gw in gateways:
                gw.kill()
            net.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    report: pytest.TestReport = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="module")
def _module_cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    appendonly = bool(getattr(request.module, "REDIS_APPENDONLY", False))
    yield from _cluster(tmp_path_factory.mktemp("cluster"), appendonly=appendonly)


@pytest.fixture
def cluster(_module_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The module's cluster, whole at the start of the test; gateway logs on failure."""
    _module_cluster.restore()
    yield _module_cluster
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        print(_module_cluster.logs())
    _module_cluster.restore()
