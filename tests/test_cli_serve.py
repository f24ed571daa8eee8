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
    # Dev mode with nothing set: the process must fall back to the dev-only secrets and say so.
    gateway = GatewayProcess(tmp_path, dev=True)
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


STRONG = "s" * 40
REFUSALS = [  # (environment, words the refusal must contain)
    ({"LIVEGATE_JWT_SECRET": "short", "LIVEGATE_SERVICE_TOKEN": STRONG}, ["LIVEGATE_JWT_SECRET", "at least 32"]),
    ({"LIVEGATE_JWT_SECRET": "x", "LIVEGATE_SERVICE_TOKEN": STRONG}, ["1 bytes"]),
    ({"LIVEGATE_JWT_SECRET": STRONG, "LIVEGATE_SERVICE_TOKEN": "tok"}, ["LIVEGATE_SERVICE_TOKEN", "at least 32"]),
    ({"LIVEGATE_JWT_SECRET": "livegate-dev-secret-DO-NOT-USE-IN-PRODUCTION", "LIVEGATE_SERVICE_TOKEN": STRONG},
     ["dev-only"]),
    ({"LIVEGATE_JWT_SECRET": STRONG, "LIVEGATE_SERVICE_TOKEN": "livegate-dev-service-token-DO-NOT-USE-IN-PRODUCTION"},
     ["dev-only"]),
    ({"LIVEGATE_DEV": "1", "LIVEGATE_JWT_SECRET": STRONG}, ["LIVEGATE_DEV=1", "real credentials", "refusing"]),
    ({"LIVEGATE_DEV": "1", "LIVEGATE_SERVICE_TOKEN": STRONG}, ["LIVEGATE_DEV=1", "LIVEGATE_SERVICE_TOKEN"]),
    ({"LIVEGATE_JWT_SECRET": STRONG, "LIVEGATE_SERVICE_TOKEN": STRONG, "LIVEGATE_MAX_JSON_DEPTH": "5000"},
     ["LIVEGATE_MAX_JSON_DEPTH"]),
    ({"LIVEGATE_JWT_SECRET": STRONG, "LIVEGATE_SERVICE_TOKEN": STRONG, "LIVEGATE_MAX_EVENT_BYTES": "99999999"},
     ["LIVEGATE_MAX_EVENT_BYTES"]),
]


def test_serve_refuses_weak_or_dev_secrets_and_dev_mode_with_real_ones(tmp_path: Path) -> None:
    for env, words in REFUSALS:
        result = subprocess.run([sys.executable, "-m", "livegate.cli", "serve", "--port", "1"],
                                env=_clean_env(LIVEGATE_DATA_DIR=str(tmp_path), **env), capture_output=True,
                                text=True, timeout=60, check=False)
        assert result.returncode == 2, (env, result.stderr)
        for word in words:
            assert word in result.stderr, (env, result.stderr)
        assert "Traceback" not in result.stderr
        for value in env.values():  # a refusal names the variable, never the secret
            if len(value) >= 8 and "DO-NOT-USE" not in value and not value.isdigit():
                assert value not in result.stderr


def test_no_token_reaches_the_log_not_even_from_a_query_string(tmp_path: Path) -> None:
    import asyncio

    import httpx
    import websockets

    gateway = GatewayProcess(tmp_path)
    with gateway:
        token = gateway.token("alice")
        forged = token[:-4] + "AAAA"

        async def use() -> None:
            async with websockets.connect(f"{gateway.ws_url}?token={forged}", compression=None) as ws:
                await ws.send('{"type":"auth","token":"' + forged + '"}')
                await asyncio.wait_for(ws.recv(), 5)
            async with httpx.AsyncClient(base_url=gateway.http_url) as client:
                await client.get(f"/v1/tools?token={token}", headers={"Authorization": f"Bearer {forged}"})
                await client.get(f"/v1/outputs/out_x?exp=1&sig={token}")

        asyncio.run(use())
    log = gateway.log_path.read_text()
    # the native transport logs no handshake line at all; uvicorn's HTTP lines (if any)
    # and every other line carry no query string with a credential
    for part in token.split(".") + forged.split("."):
        assert part not in log, "token material in the log"
