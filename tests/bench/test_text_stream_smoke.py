"""bench/text_stream.py runs end to end with tiny numbers (``--quick``): both texts exact,
every figure present and positive. No ratio or speed is asserted (bench/README.md holds the
measured ones)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(150)
def test_quick_text_stream_bench_reports_both_sides(tmp_path: Path) -> None:
    out = tmp_path / "text_stream.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "text_stream.py"), "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["exact"] == {"partialText": True, "deltas": True}
    assert report["tokens"] == 400 and report["progress_events"] > 1
    for key in ("wire_bytes", "history_bytes"):
        assert set(report[key]) == {"partialText", "deltas"} and all(v > 0 for v in report[key].values()), report
    assert report["ratios"]["wire"] > 0 and report["ratios"]["history"] > 0
    assert "| bytes on the wire, per connection |" in proc.stdout and "| bytes of history |" in proc.stdout
