"""Output bytes on disk, and the short-lived signed URLs that let ``<img>``, ``<audio>``
and ``<video>`` elements load them (openapi.yaml ``getOutput``).

Files are named by their server-made id only (``out_<hex>``), never by anything a user or
upstream supplied, so there is no path to traverse.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from pathlib import Path

import msgspec

from livegate.protocol import http
from livegate.store import OutputRow

OUTPUT_ID = re.compile(r"^out_[0-9a-f]{16}$")
_UNSET = msgspec.UNSET


def _opt(value: object) -> object:
    return _UNSET if value is None else value


class OutputStore:
    def __init__(self, directory: Path, signing_key: bytes, url_ttl_seconds: int) -> None:
        self.directory = directory
        self._key = signing_key
        self.url_ttl = url_ttl_seconds

    @staticmethod
    def new_id() -> str:
        return "out_" + secrets.token_hex(8)

    def path_for(self, output_id: str) -> Path:
        if not OUTPUT_ID.match(output_id):
            raise ValueError("not an output id")
        return self.directory / output_id[4:6] / output_id

    def write(self, output_id: str, data: bytes) -> None:
        path = self.path_for(output_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(path)

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
