"""Webhook settings: read from the environment, and refused by ``serve`` when unusable."""

from __future__ import annotations

import base64
import json

import pytest

from livegate.config import Config

SECRET = "whsec_" + base64.b64encode(b"c" * 32).decode()


def test_the_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoints = json.dumps([{"name": "billing", "url": "https://billing.example/h", "secret": SECRET}])
    for name, value in {"LIVEGATE_WEBHOOKS": endpoints, "LIVEGATE_WEBHOOK_SECRET": SECRET,
                        "LIVEGATE_WEBHOOK_PER_GENERATION": "1", "LIVEGATE_WEBHOOK_ALLOW": "10.0.0.0/8, hooks.internal",
                        "LIVEGATE_WEBHOOK_MAX_ATTEMPTS": "3", "LIVEGATE_WEBHOOK_BACKOFF_BASE": "0.5"}.items():
        monkeypatch.setenv(name, value)
    config = Config.from_env()
    assert config.webhooks == endpoints and config.webhook_secret == SECRET and config.webhook_per_generation
    assert config.webhook_allow == ("10.0.0.0/8", "hooks.internal")
    assert config.webhook_max_attempts == 3 and config.webhook_backoff_base_seconds == 0.5
    assert not [p for p in config.problems() if "WEBHOOK" in p]


def test_defaults_are_off_and_fine() -> None:
    config = Config()
    assert config.webhooks is None and not config.webhook_per_generation and config.webhook_allow == ()
    assert not [p for p in config.problems() if "WEBHOOK" in p]


@pytest.mark.parametrize("overrides, problem", [
    ({"webhook_per_generation": True}, "needs LIVEGATE_WEBHOOK_SECRET"),
    ({"webhook_secret": "not-a-secret"}, "whsec_"),
    ({"webhooks": "[{\"name\": \"x\"}]"}, "LIVEGATE_WEBHOOKS[0]"),
    ({"webhooks": "/no/such/file.json"}, "No such file"),
    ({"webhook_max_attempts": 0}, "LIVEGATE_WEBHOOK_MAX_ATTEMPTS"),
])
def test_unusable_settings_are_named(overrides: dict[str, object], problem: str) -> None:
    assert any(problem in p for p in Config(**overrides).problems())  # type: ignore[arg-type]
