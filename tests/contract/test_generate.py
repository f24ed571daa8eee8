"""``livegate contract check`` really catches drift: a spec edited without regenerating, or
a generated file edited by hand, makes it exit non-zero and name the file; ``generate``
makes it pass again."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from livegate.contract.generate import GENERATED_FILES, find_root

ROOT = find_root(Path(__file__).parent)


def _copy_contract(dest: Path) -> Path:
    for rel in ["asyncapi.yaml", "openapi.yaml", *GENERATED_FILES]:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, dest / rel)
    return dest


def _contract(root: Path, action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "livegate.cli", "contract", action, "--root", str(root)],
                          capture_output=True, text=True, timeout=120, check=False)


def test_check_fails_on_a_stale_spec_and_generate_fixes_it(tmp_path: Path) -> None:
    root = _copy_contract(tmp_path)
    assert _contract(root, "check").returncode == 0
    spec = (root / "asyncapi.yaml").read_text()
    (root / "asyncapi.yaml").write_text(spec.replace("title: livegate realtime API", "title: livegate realtime API X", 1))
    stale = _contract(root, "check")
    assert stale.returncode == 1
    assert "src/livegate/specs/asyncapi.yaml" in stale.stdout and "docs/reference/asyncapi.html" in stale.stdout
    assert _contract(root, "generate").returncode == 0
    assert _contract(root, "check").returncode == 0


def test_check_fails_on_a_hand_edited_generated_file(tmp_path: Path) -> None:
    root = _copy_contract(tmp_path)
    messages = root / "src/livegate/protocol/messages.py"
    messages.write_text(messages.read_text() + "\n# a hand edit\n")
    contract_md = root / "docs/contract.md"
    contract_md.write_text(contract_md.read_text().replace("| 4000 |", "| 4999 |", 1))
    stale = _contract(root, "check")
    assert stale.returncode == 1
    assert "src/livegate/protocol/messages.py" in stale.stdout and "docs/contract.md" in stale.stdout
