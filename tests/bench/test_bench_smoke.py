"""bench/run.py runs end to end with tiny numbers and reports every figure (no speed asserted)."""

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
         "--max-seconds", "0.5", "--rate", "1000", "--rate-seconds", "0.5", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=110, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    results = report["results"]
    assert set(results) == {"livegate", "floor", "socketio", "livegate-deflate"}
    for name in ("livegate", "floor", "socketio"):
        for scenario in ("max", "rate"):
            figures = results[name][scenario]
            # every published event reached both connections of its user
            assert figures["delivered"] == figures["expected"] > 0, (name, scenario, figures)
            for key in ("delivered_per_s", "cpu_us_per_event", "p50_ms", "p99_ms"):
                assert isinstance(figures[key], float) and math.isfinite(figures[key]), (name, scenario, key)
        idle = results[name]["idle"]
        assert idle["connections"] == 40 and math.isfinite(idle["kb_per_connection"])
    deflate = results["livegate-deflate"]
    assert deflate["deflate_on"]["compressed_frames"] > 0 and deflate["deflate_off"]["compressed_frames"] == 0
    assert deflate["deflate_on"]["delivered"] == deflate["deflate_on"]["expected"]
    for peer in ("livegate/floor", "livegate/socketio"):
        assert set(report["ratios"][peer]) == {"max", "rate", "idle"}
    assert len(report["targets"]) == 4
    assert "| livegate | max |" in proc.stdout
