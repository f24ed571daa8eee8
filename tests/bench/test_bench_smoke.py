"""bench/run.py runs end to end with tiny numbers and reports every figure (no speed asserted),
including the 2 processes + Redis target (``livegate-redis2``), the SSE wire (``livegate-sse``)
and their ratios to the embedded default's WebSocket of the same run."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_bench_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--users", "10", "--idle", "40",
         # The fixed-rate scenario must use a few of /proc's 10 ms CPU ticks, or a fast server's
         # CPU per event reads 0 and its ratios are NaN: 2,000 events/s x 2 connections for 1 s.
         "--max-seconds", "0.5", "--rate", "2000", "--rate-seconds", "1.0", "--out", str(out),
         "--servers", "livegate,livegate-sse,floor,socketio,livegate-redis2"],
        cwd=ROOT, capture_output=True, text=True, timeout=170, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    results = report["results"]
    assert set(results) == {"livegate", "livegate-sse", "floor", "socketio", "livegate-redis2", "livegate-deflate"}
    for name in ("livegate", "livegate-sse", "floor", "socketio", "livegate-redis2"):
        for scenario in ("max", "rate"):
            figures = results[name][scenario]
            # every published event reached both connections of its user
            assert figures["delivered"] == figures["expected"] > 0, (name, scenario, figures)
            for key in ("delivered_per_s", "cpu_us_per_event", "p50_ms", "p99_ms"):
                assert isinstance(figures[key], float) and math.isfinite(figures[key]), (name, scenario, key)
        idle = results[name]["idle"]
        assert idle["connections"] == 40 and math.isfinite(idle["kb_per_connection"])
    # 2 gateways + Redis: CPU split into gateways and redis-server, Redis RSS reported apart
    for scenario in ("max", "rate"):
        figures = results["livegate-redis2"][scenario]
        for key in ("cpu_us_per_event_gateways", "cpu_us_per_event_redis"):
            assert isinstance(figures[key], float) and math.isfinite(figures[key]), (scenario, key)
    idle = results["livegate-redis2"]["idle"]
    assert idle["processes"] == 2
    for key in ("redis_rss_after_mb", "redis_kb_per_connection", "cpu_ms_per_connect_gateways",
                "cpu_ms_per_connect_redis"):
        assert math.isfinite(idle[key]), key
    deflate = results["livegate-deflate"]
    assert deflate["deflate_on"]["compressed_frames"] > 0 and deflate["deflate_off"]["compressed_frames"] == 0
    assert deflate["deflate_on"]["delivered"] == deflate["deflate_on"]["expected"]
    for peer in ("livegate/floor", "livegate/socketio", "livegate-redis2/livegate", "livegate-sse/livegate"):
        assert set(report["ratios"][peer]) == {"max", "rate", "idle"}
    for pair in ("livegate-redis2/livegate", "livegate-sse/livegate"):
        same_run = report["ratios"][pair]
        for scenario in ("max", "rate"):
            assert set(same_run[scenario]) == {"delivered_per_s", "cpu_us_per_event", "p50_ms", "p99_ms"}
            assert all(math.isfinite(v) for v in same_run[scenario].values()), (pair, same_run)
        assert set(same_run["idle"]) == {"kb_per_connection", "cpu_ms_per_connect"}
    assert len(report["targets"]) == 4
    assert "| livegate | max |" in proc.stdout
    assert "| livegate-redis2 | max |" in proc.stdout and "livegate-redis2/livegate:" in proc.stdout
    assert "| livegate-sse | max |" in proc.stdout and "livegate-sse/livegate:" in proc.stdout


def test_baseline_source_is_what_the_child_imports(tmp_path: Path) -> None:
    # --baseline GITREF runs `livegate serve` with src/ of that ref first on PYTHONPATH: the
    # child must import livegate from there, not from the editable install of the working tree.
    sys.path.insert(0, str(ROOT))
    try:
        from bench.run import export_source
    finally:
        sys.path.remove(str(ROOT))
    source = export_source("HEAD", tmp_path / "baseline")
    assert (source / "livegate" / "server.py").is_file()
    probe = subprocess.run([sys.executable, "-c", "import livegate.server; print(livegate.server.__file__)"],
                           env={"PYTHONPATH": str(source), "PATH": "/usr/bin:/bin"}, capture_output=True,
                           text=True, timeout=60, check=True)
    assert Path(probe.stdout.strip()).resolve() == (source / "livegate" / "server.py").resolve()


def test_queued_probe_reports_both_figures(tmp_path: Path) -> None:
    out = tmp_path / "queued.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "queued_probe.py"), "--rounds", "1", "--resumes", "5",
         "--progress-batches", "5", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=110, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads(out.read_text())["livegate"]
    for key in ("replay", "progress"):
        assert isinstance(figures[key], float) and math.isfinite(figures[key]) and figures[key] >= 0, key
