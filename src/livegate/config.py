"""Configuration from the environment (``LIVEGATE_*``); every knob is listed in README.md."""

from __future__ import annotations

import logging
import os
import secrets
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from livegate.protocol.jsonlimits import MAX_DEPTH_SETTING

log = logging.getLogger("livegate.config")

DEV_JWT_SECRET = "livegate-dev-secret-DO-NOT-USE-IN-PRODUCTION"
DEV_SERVICE_TOKEN = "livegate-dev-service-token-DO-NOT-USE-IN-PRODUCTION"
#: The shortest HS256 secret (bytes) and service token (characters) ``serve`` accepts.
MIN_SECRET_BYTES = 32


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _float(name: str, default: float) -> float:
    return float(_env(name, str(default)))  # type: ignore[arg-type]


def _int(name: str, default: int) -> int:
    return int(_env(name, str(default)))  # type: ignore[arg-type]


def _bool(name: str, default: bool = False) -> bool:
    return (_env(name, "1" if default else "0") or "0").lower() in {"1", "true", "yes", "on"}


def _list(name: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in (_env(name, "") or "").split(",") if x.strip())


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8000
    dev: bool = False
    # Auth
    jwt_secret: str | None = None
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_public_key_file: str | None = None
    jwt_jwks_file: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: float = 0.0
    service_token: str | None = None
    auth_timeout_seconds: float = 5.0
    token_expiring_lead_seconds: float = 60.0
    token_grace_seconds: float = 5.0
    # Streams
    history_max_events: int = 1000
    history_max_age_seconds: float = 600.0
    # A resume replays history in pages of at most this many events and bytes (one page per
    # connection in memory at a time; the next is read once the last is on the wire).
    replay_page_events: int = 100
    replay_page_bytes: int = 1024 * 1024
    redis_url: str | None = None
    # After Redis restarts or fails over, publishes wait this long so every live process can
    # show what it saw of the lost writes first (docs/scaling.md, "Rewinds").
    redis_settle_seconds: float = 3.0
    # Connections
    heartbeat_interval_seconds: float = 25.0
    heartbeat_timeout_seconds: float = 20.0
    max_frame_bytes: int = 64 * 1024
    rate_limit_per_second: float = 20.0
    rate_limit_burst: int = 40
    max_connections_per_user: int = 32
    allowed_origins: tuple[str, ...] = ()
    queue_max_bytes: int = 4 * 1024 * 1024
    max_json_depth: int = 32
    max_event_bytes: int = 256 * 1024
    shutdown_grace_seconds: float = 5.0
    permessage_deflate: bool = False
    # Transport limits (livegate.transport.guard, livegate.transport.native; docs/scaling.md)
    idle_timeout_seconds: float = 10.0
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 10.0
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    max_connections: int = 50_000
    max_unauthenticated: int = 10_000
    write_buffer_bytes: int = 64 * 1024
    close_timeout_seconds: float = 10.0
    sse_retry_ms: int = 2000
    # Generations
    data_dir: Path = Path(".livegate-data")
    tools_file: str | None = None
    output_url_ttl_seconds: int = 3600
    max_concurrency_per_user: int = 4
    max_queued_per_user: int = 50
    tool_share_per_user: float = 0.5
    max_cancel_after_seconds: float = 86400.0  # run control: the largest cancelAfterSeconds
    database_url: str | None = None
    # At start, a database that does not answer is retried this long (a gateway started
    # with, or just before, its database waits for it instead of exiting at once).
    store_start_timeout_seconds: float = 60.0
    max_output_bytes: int = 256 * 1024 * 1024
    run_worker: bool = True
    worker_concurrency: int = 32
    takeover_seconds: float = 30.0
    retention_days: float = 30.0
    retention_interval_seconds: float = 3600.0
    max_inputs_bytes: int = 256 * 1024
    max_input_items: int = 256
    announce_grace_seconds: float = 5.0  # the outbox of run ends (livegate.service.outbox)
    # Webhooks (README "Webhooks")
    webhooks: str | None = None  # LIVEGATE_WEBHOOKS: JSON array of endpoints, or a file holding it
    webhook_secret: str | None = None  # signs per-generation webhookUrl deliveries (whsec_...)
    webhook_per_generation: bool = False
    webhook_allow: tuple[str, ...] = ()
    webhook_backoff_base_seconds: float = 5.0
    webhook_backoff_factor: float = 6.0
    webhook_backoff_max_seconds: float = 36000.0
    webhook_max_attempts: int = 8
    webhook_retry_period_seconds: float = 3 * 86400.0
    webhook_connect_timeout_seconds: float = 5.0
    webhook_timeout_seconds: float = 15.0
    webhook_max_response_bytes: int = 64 * 1024
    webhook_poll_seconds: float = 1.0
    webhook_concurrency: int = 16
    log_level: str = "INFO"
    insecure_defaults_used: tuple[str, ...] = field(default=())

    @classmethod
    def from_env(cls, **overrides: object) -> Config:
        dev = _bool("LIVEGATE_DEV")
        insecure: list[str] = []
        jwt_secret = _env("LIVEGATE_JWT_SECRET")
        if jwt_secret is None and dev:
            jwt_secret = DEV_JWT_SECRET
            insecure.append("LIVEGATE_JWT_SECRET")
        service_token = _env("LIVEGATE_SERVICE_TOKEN")
        if service_token is None and dev:
            service_token = DEV_SERVICE_TOKEN
            insecure.append("LIVEGATE_SERVICE_TOKEN")
        config = cls(
            host=_env("LIVEGATE_HOST", "127.0.0.1") or "127.0.0.1",
            port=_int("LIVEGATE_PORT", 8000),
            dev=dev,
            jwt_secret=jwt_secret,
            jwt_algorithms=_list("LIVEGATE_JWT_ALGORITHMS") or ("HS256",),
            jwt_public_key_file=_env("LIVEGATE_JWT_PUBLIC_KEY_FILE"),
            jwt_jwks_file=_env("LIVEGATE_JWT_JWKS_FILE"),
            jwt_issuer=_env("LIVEGATE_JWT_ISSUER"),
            jwt_audience=_env("LIVEGATE_JWT_AUDIENCE"),
            jwt_leeway_seconds=_float("LIVEGATE_JWT_LEEWAY", 0.0),
            service_token=service_token,
            auth_timeout_seconds=_float("LIVEGATE_AUTH_TIMEOUT", 5.0),
            token_expiring_lead_seconds=_float("LIVEGATE_TOKEN_EXPIRING_LEAD", 60.0),
            token_grace_seconds=_float("LIVEGATE_TOKEN_GRACE", 5.0),
            history_max_events=_int("LIVEGATE_HISTORY_MAX_EVENTS", 1000),
            history_max_age_seconds=_float("LIVEGATE_HISTORY_MAX_AGE", 600.0),
            replay_page_events=_int("LIVEGATE_REPLAY_PAGE_EVENTS", 100),
            replay_page_bytes=_int("LIVEGATE_REPLAY_PAGE_BYTES", 1024 * 1024),
            redis_url=_env("LIVEGATE_REDIS_URL"),
            redis_settle_seconds=_float("LIVEGATE_REDIS_SETTLE_SECONDS", 3.0),
            heartbeat_interval_seconds=_float("LIVEGATE_HEARTBEAT_INTERVAL", 25.0),
            heartbeat_timeout_seconds=_float("LIVEGATE_HEARTBEAT_TIMEOUT", 20.0),
            max_frame_bytes=_int("LIVEGATE_MAX_FRAME_BYTES", 64 * 1024),
            rate_limit_per_second=_float("LIVEGATE_RATE_LIMIT", 20.0),
            rate_limit_burst=_int("LIVEGATE_RATE_BURST", 40),
            max_connections_per_user=_int("LIVEGATE_MAX_CONNECTIONS_PER_USER", 32),
            allowed_origins=_list("LIVEGATE_ALLOWED_ORIGINS"),
            queue_max_bytes=_int("LIVEGATE_QUEUE_MAX_BYTES", 4 * 1024 * 1024),
            max_json_depth=_int("LIVEGATE_MAX_JSON_DEPTH", 32),
            max_event_bytes=_int("LIVEGATE_MAX_EVENT_BYTES", 256 * 1024),
            shutdown_grace_seconds=_float("LIVEGATE_SHUTDOWN_GRACE", 5.0),
            permessage_deflate=_bool("LIVEGATE_PERMESSAGE_DEFLATE"),
            idle_timeout_seconds=_float("LIVEGATE_IDLE_TIMEOUT", 10.0),
            header_timeout_seconds=_float("LIVEGATE_HEADER_TIMEOUT", 10.0),
            body_timeout_seconds=_float("LIVEGATE_BODY_TIMEOUT", 10.0),
            max_header_bytes=_int("LIVEGATE_MAX_HEADER_BYTES", 32 * 1024),
            max_headers=_int("LIVEGATE_MAX_HEADERS", 100),
            max_connections=_int("LIVEGATE_MAX_CONNECTIONS", 50_000),
            max_unauthenticated=_int("LIVEGATE_MAX_UNAUTHENTICATED", 10_000),
            write_buffer_bytes=_int("LIVEGATE_WRITE_BUFFER_BYTES", 64 * 1024),
            close_timeout_seconds=_float("LIVEGATE_CLOSE_TIMEOUT", 10.0),
            sse_retry_ms=_int("LIVEGATE_SSE_RETRY_MS", 2000),
            data_dir=Path(_env("LIVEGATE_DATA_DIR", ".livegate-data") or ".livegate-data"),
            tools_file=_env("LIVEGATE_TOOLS_FILE"),
            output_url_ttl_seconds=_int("LIVEGATE_OUTPUT_URL_TTL", 3600),
            max_concurrency_per_user=_int("LIVEGATE_MAX_CONCURRENCY_PER_USER", 4),
            max_queued_per_user=_int("LIVEGATE_MAX_QUEUED_PER_USER", 50),
            tool_share_per_user=_float("LIVEGATE_TOOL_SHARE_PER_USER", 0.5),
            max_cancel_after_seconds=_float("LIVEGATE_MAX_CANCEL_AFTER_SECONDS", 86400.0),
            database_url=_env("LIVEGATE_DATABASE_URL"),
            store_start_timeout_seconds=_float("LIVEGATE_STORE_START_TIMEOUT", 60.0),
            max_output_bytes=_int("LIVEGATE_MAX_OUTPUT_BYTES", 256 * 1024 * 1024),
            run_worker=_bool("LIVEGATE_RUN_WORKER", True),
            worker_concurrency=_int("LIVEGATE_WORKER_CONCURRENCY", 32),
            takeover_seconds=_float("LIVEGATE_TAKEOVER_SECONDS", 30.0),
            retention_days=_float("LIVEGATE_RETENTION_DAYS", 30.0),
            retention_interval_seconds=_float("LIVEGATE_RETENTION_INTERVAL", 3600.0),
            max_inputs_bytes=_int("LIVEGATE_MAX_INPUTS_BYTES", 256 * 1024),
            max_input_items=_int("LIVEGATE_MAX_INPUT_ITEMS", 256),
            announce_grace_seconds=_float("LIVEGATE_ANNOUNCE_GRACE_SECONDS", 5.0),
            webhooks=_env("LIVEGATE_WEBHOOKS"),
            webhook_secret=_env("LIVEGATE_WEBHOOK_SECRET"),
            webhook_per_generation=_bool("LIVEGATE_WEBHOOK_PER_GENERATION"),
            webhook_allow=_list("LIVEGATE_WEBHOOK_ALLOW"),
            webhook_backoff_base_seconds=_float("LIVEGATE_WEBHOOK_BACKOFF_BASE", 5.0),
            webhook_backoff_factor=_float("LIVEGATE_WEBHOOK_BACKOFF_FACTOR", 6.0),
            webhook_backoff_max_seconds=_float("LIVEGATE_WEBHOOK_BACKOFF_MAX", 36000.0),
            webhook_max_attempts=_int("LIVEGATE_WEBHOOK_MAX_ATTEMPTS", 8),
            webhook_retry_period_seconds=_float("LIVEGATE_WEBHOOK_RETRY_PERIOD", 3 * 86400.0),
            webhook_connect_timeout_seconds=_float("LIVEGATE_WEBHOOK_CONNECT_TIMEOUT", 5.0),
            webhook_timeout_seconds=_float("LIVEGATE_WEBHOOK_TIMEOUT", 15.0),
            webhook_max_response_bytes=_int("LIVEGATE_WEBHOOK_MAX_RESPONSE_BYTES", 64 * 1024),
            webhook_poll_seconds=_float("LIVEGATE_WEBHOOK_POLL_SECONDS", 1.0),
            webhook_concurrency=_int("LIVEGATE_WEBHOOK_CONCURRENCY", 16),
            log_level=_env("LIVEGATE_LOG_LEVEL", "INFO") or "INFO",
            insecure_defaults_used=tuple(insecure),
        )
        return replace(config, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]

    @property
    def url_signing_key(self) -> bytes:
        """Key for signed output URLs: derived from the JWT secret, or random per process."""
        base = self.jwt_secret or self.service_token
        if base is None:
            return _PROCESS_KEY
        return ("livegate-output-url:" + base).encode()

    def problems(self) -> list[str]:
        """What keeps this configuration from serving securely (empty when it can).

        ``livegate serve`` refuses to start on any of them:

        * outside dev mode: no key; an HS256 secret under 32 bytes or a service token under 32
          characters (RFC 7518 3.2: an HS256 key is at least 256 bits); the published dev
          constants set explicitly;
        * in dev mode, *real* credentials (a secret, token or key other than the dev ones):
          dev mode opens ``POST /v1/dev/token``, which would mint tokens signed with the real
          key for anyone. The safe choice is to refuse, not to guess which was meant;
        * a limit out of its range.
        """
        found = []
        if self.dev:
            real = [name for name, value, dev_value in (
                ("LIVEGATE_JWT_SECRET", self.jwt_secret, DEV_JWT_SECRET),
                ("LIVEGATE_SERVICE_TOKEN", self.service_token, DEV_SERVICE_TOKEN)) if value and value != dev_value]
            real += [name for name, value in (("LIVEGATE_JWT_PUBLIC_KEY_FILE", self.jwt_public_key_file),
                                              ("LIVEGATE_JWT_JWKS_FILE", self.jwt_jwks_file)) if value]
            if real:
                found.append(f"LIVEGATE_DEV=1 together with real credentials ({', '.join(real)}): refusing to "
                             "start, because dev mode lets anyone mint user tokens (POST /v1/dev/token) signed "
                             "with them. Unset them for dev mode, or unset LIVEGATE_DEV to serve with them")
        else:
            if self.jwt_secret == DEV_JWT_SECRET or self.service_token == DEV_SERVICE_TOKEN:
                found.append("the published dev-only secret/token is set outside dev mode: it is public, "
                             "choose your own LIVEGATE_JWT_SECRET / LIVEGATE_SERVICE_TOKEN")
            if self.jwt_secret and len(self.jwt_secret.encode()) < MIN_SECRET_BYTES:
                found.append(f"LIVEGATE_JWT_SECRET is {len(self.jwt_secret.encode())} bytes; an HS256 secret must "
                             f"have at least {MIN_SECRET_BYTES} (e.g. `python -c 'import secrets; "
                             "print(secrets.token_urlsafe(32))'`)")
            if self.service_token and len(self.service_token) < MIN_SECRET_BYTES:
                found.append(f"LIVEGATE_SERVICE_TOKEN is {len(self.service_token)} characters; it must have at "
                             f"least {MIN_SECRET_BYTES}")
        found.extend(self._limit_problems())
        if not (self.jwt_secret or self.jwt_public_key_file or self.jwt_jwks_file):
            found.append("no user-token key: set LIVEGATE_JWT_SECRET (HS256) or LIVEGATE_JWT_PUBLIC_KEY_FILE / "
                         "LIVEGATE_JWT_JWKS_FILE (RS256/ES256), or LIVEGATE_DEV=1 for dev-only defaults")
        if not self.service_token:
            found.append("no service credential: set LIVEGATE_SERVICE_TOKEN (Bearer of POST /v1/events), "
                         "or LIVEGATE_DEV=1 for a dev-only default")
        return found

    def _limit_problems(self) -> list[str]:
        found = []
        if not 1 <= self.max_json_depth <= MAX_DEPTH_SETTING:
            found.append(f"LIVEGATE_MAX_JSON_DEPTH must be 1..256 (got {self.max_json_depth}): the decoders "
                         "recurse per level and Python's recursion limit is ~1,000 frames")
        if not 1024 <= self.max_event_bytes <= self.queue_max_bytes:
            found.append(f"LIVEGATE_MAX_EVENT_BYTES must be 1024..LIVEGATE_QUEUE_MAX_BYTES "
                         f"({self.queue_max_bytes}), got {self.max_event_bytes}: one event must fit a reader's queue")
        found.extend(self._webhook_problems())
        for name, value in (("LIVEGATE_MAX_INPUTS_BYTES", self.max_inputs_bytes),
                            ("LIVEGATE_MAX_INPUT_ITEMS", self.max_input_items),
                            ("LIVEGATE_WEBHOOK_MAX_ATTEMPTS", self.webhook_max_attempts),
                            ("LIVEGATE_WEBHOOK_CONCURRENCY", self.webhook_concurrency),
                            ("LIVEGATE_MAX_CONNECTIONS", self.max_connections),
                            ("LIVEGATE_MAX_UNAUTHENTICATED", self.max_unauthenticated),
                            ("LIVEGATE_MAX_HEADERS", self.max_headers)):
            if value < 1:
                found.append(f"{name} must be positive (got {value})")
        for name, seconds in (("LIVEGATE_IDLE_TIMEOUT", self.idle_timeout_seconds),
                              ("LIVEGATE_HEADER_TIMEOUT", self.header_timeout_seconds),
                              ("LIVEGATE_BODY_TIMEOUT", self.body_timeout_seconds),
                              ("LIVEGATE_CLOSE_TIMEOUT", self.close_timeout_seconds)):
            if not seconds > 0:
                found.append(f"{name} must be a positive number of seconds (got {seconds})")
        if not 1024 <= self.max_header_bytes <= 1024 * 1024:
            found.append(f"LIVEGATE_MAX_HEADER_BYTES must be 1024..1048576 (got {self.max_header_bytes})")
        if self.write_buffer_bytes < 4096:
            found.append(f"LIVEGATE_WRITE_BUFFER_BYTES must be at least 4096 (got {self.write_buffer_bytes})")
        return found

    def _webhook_problems(self) -> list[str]:
        from livegate.webhooks.policy import WebhookConfigError, generation_endpoint, load_endpoints

        found = []
        try:
            load_endpoints(self.webhooks)
            generation_endpoint(self.webhook_secret)
        except (WebhookConfigError, OSError) as exc:
            found.append(str(exc))
        if self.webhook_per_generation and not self.webhook_secret:
            found.append("LIVEGATE_WEBHOOK_PER_GENERATION=1 needs LIVEGATE_WEBHOOK_SECRET (whsec_<base64>) to sign "
                         "the deliveries to per-generation webhookUrls")
        return found

    def warn_if_insecure(self) -> None:
        if self.insecure_defaults_used:
            banner = "!" * 78
            text = (f"{banner}\n!! LIVEGATE_DEV=1: using DEV-ONLY defaults for "
                    f"{', '.join(self.insecure_defaults_used)}.\n"
                    "!! Anyone can mint tokens (POST /v1/dev/token). NEVER expose this process.\n"
                    f"{banner}")
            # Once in the structured log (for collectors) and once as plain lines on stderr,
            # where a person starting the process sees it unescaped.
            log.warning(text)
            print(text, file=sys.stderr, flush=True)


_PROCESS_KEY = secrets.token_bytes(32)
