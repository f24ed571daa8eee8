"""Output ids and the short-lived signed URLs that let ``<img>``, ``<audio>`` and
``<video>`` elements load outputs (openapi.yaml ``getOutput``). The bytes themselves are in
the store (:meth:`livegate.store.base.Store.write_output` / ``read_output``).

Ids are made by the server only (``out_<hex>``); ``GET /v1/outputs/{id}`` looks up nothing
that does not match :data:`OUTPUT_ID`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time

import msgspec

from livegate.protocol import http
from livegate.store.base import OutputRow

OUTPUT_ID = re.compile(r"^out_[0-9a-f]{16}$")
_UNSET = msgspec.UNSET


def _opt(value: object) -> object:
    return _UNSET if value is None else value


class OutputStore:
    """Signing of output URLs (the name is historical: bytes live in the store now)."""

    def __init__(self, signing_key: bytes, url_ttl_seconds: int) -> None:
        self._key = signing_key
        self.url_ttl = url_ttl_seconds

    @staticmethod
    def new_id() -> str:
        return "out_" + secrets.token_hex(8)

    def signature(self, output_id: str, user_id: str, expires: int) -> str:
        mac = hmac.new(self._key, f"{output_id}\n{user_id}\n{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def signed_url(self, row: OutputRow, now: float | None = None) -> str:
        expires = int((now or time.time()) + self.url_ttl)
        return f"/v1/outputs/{row.id}?exp={expires}&sig={self.signature(row.id, row.user_id, expires)}"

    def signature_valid(self, row: OutputRow, expires: int, sig: str, now: float | None = None) -> bool:
        if expires < (now or time.time()):
            return False
        return hmac.compare_digest(sig.encode(), self.signature(row.id, row.user_id, expires).encode())

    def describe(self, row: OutputRow) -> http.Output:
        return http.Output(
            id=row.id, kind=row.kind, media_type=row.media_type, url=self.signed_url(row),  # type: ignore[arg-type]
            size_bytes=row.size_bytes, width=_opt(row.width), height=_opt(row.height),  # type: ignore[arg-type]
            duration_seconds=_opt(row.duration_seconds), filename=_opt(row.filename),  # type: ignore[arg-type]
            text=_opt(row.text),  # type: ignore[arg-type]
        )
