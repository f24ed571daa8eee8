"""ComfyUI's HTTP API (0.8.0) over httpx, with errors mapped to ``ToolError`` here.

Only what the adapter needs: submit, history, queue, interrupt, delete, view. Timeouts ->
``upstream_timeout``; connection failures and 5xx -> ``upstream_unavailable``; a refused
prompt (HTTP 400) -> ``upstream_bad_request`` with the validation errors spelled out;
other 4xx -> ``upstream_bad_request``.
"""

from __future__ import annotations

import json
import mimetypes
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from livegate.errors import ToolError
from livegate.tools.comfyui_tracker import OutputFile, summarise_validation_error

__all__ = ["ComfyAPI", "QueueState"]


@dataclass(frozen=True, slots=True)
class QueueState:
    """Where a prompt is in ``GET /queue``; ``item`` is its ``[number, id, prompt,
    extra_data, outputs]`` entry when queued."""

    where: Literal["running", "pending", "absent"]
    item: list[Any] | None = None
    position: int | None = None  # pending behind a running prompt: 1 + the pending ones before it


def _number(item: list[Any]) -> float:
    number = item[0]
    return float(number) if isinstance(number, (int, float)) else float("inf")


class ComfyAPI:
    def __init__(
        self, base_url: str, *, timeout: float, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._client = httpx.AsyncClient(
            base_url=self.base_url, timeout=httpx.Timeout(timeout), transport=transport
        )

    def ws_url(self, client_id: str) -> str:
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path + "/ws", f"clientId={quote(client_id)}", ""))

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ToolError(
                f"ComfyUI did not answer {method} {path} within {self._timeout}s", code="upstream_timeout"
            ) from exc
        except httpx.TransportError as exc:
            raise ToolError(
                f"cannot reach ComfyUI at {self.base_url}: {exc!r}", code="upstream_unavailable"
            ) from exc
        if response.status_code >= 500:
            raise ToolError(
                f"ComfyUI answered {method} {path} with HTTP {response.status_code}: "
                f"{response.text[:200].strip()}",
                code="upstream_unavailable",
            )
        return response

    @staticmethod
    def _json(response: httpx.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ToolError(f"ComfyUI sent malformed JSON for {what}", code="upstream_protocol_error") from None

    async def submit(self, prompt: dict[str, Any], *, client_id: str, prompt_id: str) -> dict[str, Any]:
        """``POST /prompt`` with our own ``prompt_id`` (ComfyUI honours it)."""
        body = {"prompt": prompt, "client_id": client_id, "prompt_id": prompt_id}
        response = await self._request("POST", "/prompt", content=json.dumps(body).encode(),
                                       headers={"content-type": "application/json"})
        if response.status_code == 400:
            detail = summarise_validation_error(self._json(response, "POST /prompt"))
            raise ToolError(f"ComfyUI refused the workflow: {detail}", code="upstream_bad_request")
        if response.status_code != 200:
            raise ToolError(
                f"ComfyUI answered POST /prompt with HTTP {response.status_code}", code="upstream_bad_request"
            )
        answer = self._json(response, "POST /prompt")
        if not isinstance(answer, dict) or answer.get("prompt_id") != prompt_id:
            raise ToolError("ComfyUI did not accept our prompt_id", code="upstream_protocol_error")
        return answer

    async def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The history entry, or ``None`` while it is queued/running (or if it was deleted:
        ComfyUI answers ``{}`` for both)."""
        response = await self._request("GET", f"/history/{quote(prompt_id)}")
        body = self._json(response, "GET /history")
        entry = body.get(prompt_id) if isinstance(body, dict) else None
        return entry if isinstance(entry, dict) else None

    async def queue_state(self, prompt_id: str) -> QueueState:
        response = await self._request("GET", "/queue")
        body = self._json(response, "GET /queue")
        busy = False
        for where in ("running", "pending"):
            items = [i for i in body.get(f"queue_{where}") or [] if isinstance(i, list) and len(i) > 2]
            busy = busy or (where == "running" and bool(items))
            for item in items:
                if item[1] == prompt_id:
                    if where == "running" or not busy:
                        # (pending while nothing runs: about to start, it waits for nobody)
                        return QueueState(where, item)
                    # ComfyUI runs pending prompts by their `number` (a priority queue)
                    ahead = sum(1 for other in items if _number(other) < _number(item))
                    return QueueState(where, item, ahead + 1)
        return QueueState("absent")

    async def interrupt(self, prompt_id: str) -> None:
        """Targeted: ComfyUI ignores it unless ``prompt_id`` is the running prompt."""
        await self._request("POST", "/interrupt", json={"prompt_id": prompt_id})

    async def delete(self, prompt_id: str) -> None:
        """Remove a pending prompt (a running one is not affected)."""
        await self._request("POST", "/queue", json={"delete": [prompt_id]})

    async def view(self, file: OutputFile) -> tuple[bytes, str]:
        params = {"filename": file.filename, "subfolder": file.subfolder, "type": file.type}
        response = await self._request("GET", "/view", params=params)
        if response.status_code != 200:
            raise ToolError(
                f"ComfyUI answered GET /view for {file.filename!r} with HTTP {response.status_code}",
                code="upstream_bad_request",
            )
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        if not media_type or media_type == "application/octet-stream":
            media_type = mimetypes.guess_type(file.filename)[0] or "application/octet-stream"
        return response.content, media_type
