"""The ``livegate`` command: ``serve`` refuses to start without keys outside dev mode (and
says which variables to set), and dev mode announces its dev-only defaults loudly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from livegate.testing.process import GatewayProcess


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEGATE_")}
    env.update(extra)
    return env


def test_serve_without_keys_refuses_and_names_the_variables(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "livegate.cli", "serve", "--port", "1"],
                            env=_clean_env(LIVEGATE_DATA_DIR=str(tmp_path)), capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 2
    assert "LIVEGATE_JWT_SECRET" in result.stderr and "LIVEGATE_SERVICE_TOKEN" in result.stderr


def test_dev_mode_warns_loudly_about_dev_only_defaults(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path)
    # Dev mode with nothing set: the process must fall back to the dev-only secrets and say so.
    gateway.extra_env = {"LIVEGATE_JWT_SECRET": "", "LIVEGATE_SERVICE_TOKEN": ""}
    with gateway:
        pass
    log = gateway.log_path.read_text()
    assert "DEV-ONLY defaults for LIVEGATE_JWT_SECRET, LIVEGATE_SERVICE_TOKEN" in log
    assert "NEVER expose this process" in log


def test_token_without_a_secret_says_what_to_set(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "livegate.cli", "token", "alice"],
                            env=_clean_env(LIVEGATE_DATA_DIR=str(tmp_path)), capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert "LIVEGATE_JWT_SECRET" in result.stderr and "Traceback" not in result.stderr
