"""What the fake ComfyUI answers from ``tests/fixtures/comfyui/http/*.json`` as captured:
output files for ``/view``, ``/object_info``, ``/system_stats``, ``/features``, the known
node classes, and the exact 400 bodies of the captured invalid prompts."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from livegate.testing.comfyui_traces import OUTPUT_NODE_CLASSES

__all__ = ["ComfyStatic", "StoredFile"]

FileKey = tuple[str, str, str]  # (type, subfolder, filename)


@dataclass(frozen=True, slots=True)
class StoredFile:
    data: bytes
    media_type: str


def _error(type_: str, message: str, details: str) -> dict[str, Any]:
    return {
        "error": {"type": type_, "message": message, "details": details, "extra_info": {}},
        "node_errors": {},
    }


class ComfyStatic:
    """Fixture-backed answers; ``files`` grows as runs produce outputs."""

    def __init__(self, fixtures_dir: Path) -> None:
        http_dir = Path(fixtures_dir) / "http"
        self._http = {p.stem: json.loads(p.read_text("utf-8")) for p in http_dir.glob("*.json")}
        self.files: dict[FileKey, StoredFile] = {}
        self.webp_previews: dict[FileKey, bytes] = {}
        self.object_info: dict[str, Any] = {}
        self.rejections: list[tuple[Any, int, Any]] = []
        names: set[str] = set(OUTPUT_NODE_CLASSES)
        for name, record in self._http.items():
            request, response = record["request"], record["response"]
            if name.startswith("get_view_") and "body_b64" in response:
                self._load_view(request["path"], response)
            elif name.startswith("get_object_info_") and isinstance(response.get("body"), dict):
                self.object_info.update(response["body"])
            elif name == "get_object_info_all_trimmed":
                names.update(response["node_names"])
            elif name.startswith("post_prompt_400_"):
                body = request.get("body") or {}
                if "prompt" in body:
                    self.rejections.append((body["prompt"], response["status"], response["body"]))
        names.update(self.object_info)
        self.node_classes = frozenset(names)

    def _load_view(self, path: str, response: Mapping[str, Any]) -> None:
        from urllib.parse import parse_qs, urlsplit

        query = {k: v[0] for k, v in parse_qs(urlsplit(path).query, keep_blank_values=True).items()}
        key = (query.get("type", "output"), query.get("subfolder", ""), query["filename"])
        data = base64.b64decode(response["body_b64"])
        if "preview" in query:
            self.webp_previews[key] = data
        else:
            media_type = response["headers"].get("Content-Type", "application/octet-stream")
            self.files[key] = StoredFile(data, media_type)

    def body(self, name: str) -> Any:
        """The captured JSON body of ``http/<name>.json``."""
        return self._http[name]["response"]["body"]

    def ensure_file(self, image: Mapping[str, Any]) -> None:
        """Make sure an output a run reports exists; invent a small PNG if no fixture has it."""
        key = (image.get("type", "output"), image.get("subfolder", ""), image["filename"])
        if key in self.files:
            return
        digest = hashlib.sha256(image["filename"].encode()).digest()
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), tuple(digest[:3])).save(buffer, format="PNG")
        self.files[key] = StoredFile(buffer.getvalue(), "image/png")

    def view(self, key: FileKey, preview: str | None) -> StoredFile | None:
        stored = self.files.get(key)
        if stored is None or not preview:
            return stored
        if key in self.webp_previews and preview.startswith("webp"):
            return StoredFile(self.webp_previews[key], "image/webp")
        fmt, _, quality = preview.partition(";")
        fmt = fmt.lower() if fmt.lower() in ("webp", "jpeg") else "webp"
        buffer = io.BytesIO()
        image = Image.open(io.BytesIO(stored.data)).convert("RGB")
        image.save(buffer, format=fmt.upper(), quality=int(quality) if quality.isdigit() else 90)
        return StoredFile(buffer.getvalue(), f"image/{fmt}")

    def validate(self, prompt: Any) -> tuple[int, Any] | None:
        """``None`` if the prompt is accepted, else ``(status, body)`` like ComfyUI 0.8.0.

        Captured invalid prompts get their captured answer; otherwise only the checks that
        need no node definitions are made (class exists, has class_type, has an output).
        """
        for captured, status, body in self.rejections:
            if captured == prompt:
                return status, body
        if not isinstance(prompt, dict):
            return 400, _error("invalid_prompt", "Prompt is not a dictionary.", "")
        for node_id, node in prompt.items():
            if not isinstance(node, dict) or "class_type" not in node:
                return 400, _error(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.",
                    f"Node ID '#{node_id}'",
                )
            if node["class_type"] not in self.node_classes:
                return 400, _error(
                    "invalid_prompt",
                    f"Cannot execute because node {node['class_type']} does not exist.",
                    f"Node ID '#{node_id}'",
                )
        if not any(node["class_type"] in OUTPUT_NODE_CLASSES for node in prompt.values()):
            return 400, _error("prompt_no_outputs", "Prompt has no outputs", "")
        return None
