"""Structured (JSON lines) logging. Connection and user ids travel as ``extra``; tokens never do.

uvicorn logs the request target of every WebSocket handshake (``"WebSocket /v1/ws?..."
[accepted]`` on ``uvicorn.error``) and, when its access log is on, of every HTTP request:
a ``?token=<JWT>`` or a signed output URL's ``sig`` would land in the log. The
:class:`RedactQueryStrings` filter on uvicorn's loggers replaces every query string in those
lines with ``?[redacted]`` (the path stays, for debugging).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

_STANDARD = set(vars(logging.makeLogRecord({})))
_REDACT = {"token", "authorization", "jwt"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = "[redacted]" if key.lower() in _REDACT else value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


_QUERY = re.compile(r"\?[^\s\"']*")
#: The loggers whose lines carry request targets (uvicorn's; its access log is off in server.py).
URL_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


def redact_query(text: str) -> str:
    return _QUERY.sub("?[redacted]", text)


class RedactQueryStrings(logging.Filter):
    """Strip query strings (``?token=...``, ``?sig=...``) from a record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_query(a) if isinstance(a, str) and "?" in a else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact_query(v) if isinstance(v, str) and "?" in v else v
                           for k, v in record.args.items()}
        if isinstance(record.msg, str) and not record.args and "?" in record.msg:
            record.msg = redact_query(record.msg)
        return True


_configured = False
_redacting = RedactQueryStrings()


def configure_logging(level: str = "INFO") -> None:
    global _configured
    for name in URL_LOGGERS:  # idempotent; filters survive uvicorn's dictConfig of these loggers
        if _redacting not in logging.getLogger(name).filters:
            logging.getLogger(name).addFilter(_redacting)
    if _configured:
        return
    _configured = True
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("livegate")
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
