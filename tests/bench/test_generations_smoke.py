"""bench/generations.py runs end to end with tiny numbers (``--quick``): both setups, every
figure finite, every generation completed, the cluster's CPU split into gateways, PostgreSQL
and Redis, and the cluster/embedded ratios. No speed is asserted."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(200)  # starts PostgreSQL, Redis and three gateways
def test_quick_generations_bench_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "generations.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "generations.py"), "--quick", "--generations", "12", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=170, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    for name in ("embedded", "cluster"):
        results = report["results"][name]
        assert results["completed"] == results["issued"] == 12, results
        for key in ("generations_per_s", "cpu_ms_per_generation", "cpu_ms_per_generation_gateways", "p50_ms",
                    "p99_ms"):
            assert isinstance(results[key], float | int) and math.isfinite(results[key]) and results[key] > 0, key
        assert len(report["rounds"][name]) == 1
    cluster, embedded = report["results"]["cluster"], report["results"]["embedded"]
    assert embedded["cpu_ms_per_generation_postgres"] == embedded["cpu_ms_per_generation_redis"] == 0
    # PostgreSQL and Redis did work for the cluster (10 ms /proc ticks over 12+ generations)
    assert cluster["cpu_ms_per_generation_postgres"] > 0 and 0 < cluster["postgres_share"] < 1
    assert math.isfinite(cluster["redis_share"]) and 0 <= cluster["redis_share"] < 1
    ratios = report["ratios"]["cluster/embedded"]
    assert set(ratios) == {"generations_per_s", "cpu_ms_per_generation", "p50_ms", "p99_ms"}
    assert all(math.isfinite(v) and v > 0 for v in ratios.values()), ratios
    assert "| cluster |" in proc.stdout and "cluster/embedded:" in proc.stdout
