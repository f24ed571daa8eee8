"""What a running tool sees (:class:`livegate.tools.base.RunContext`), implemented on the
generation service: progress becomes ``generationProgress`` events, outputs go to the
store (their bytes into ``output_chunks``, readable from every process).

Progress is coalesced per run to at most one event per ``min_interval`` (50 ms): a tool
streaming hundreds of text deltas a second would otherwise flood the user's bounded
history. Nothing is lost: the latest progress is always published (``flush`` runs before
every transition), and streamed text goes out as ``textDelta`` + ``textOffset``
(asyncapi.yaml, "Streamed text"): a coalesced event carries the concatenation of the
deltas since the last one published, and the text so far is in the snapshot (GET).

Progress is bounded by ``LIVEGATE_MAX_EVENT_BYTES``: a preview whose event would be larger
is dropped (logged at warning). A text delta is never dropped (that would break every
reader's text): one too large for an event is split over several.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import msgspec

from livegate.errors import OutputTooLarge, ToolError
from livegate.protocol import http
from livegate.protocol.textdelta import utf16_len
from livegate.store.base import GenerationRow, OutputRow
from livegate.tools.base import OutputKind, StoredOutput

if TYPE_CHECKING:
    from livegate.service.generations import GenerationService

_UNSET = msgspec.UNSET
log = logging.getLogger("livegate.generations")
INLINE_TEXT_LIMIT = 16 * 1024
#: Preview types asyncapi.yaml ``Preview.url`` allows (passive images: no SVG, which can script).
PREVIEW_MEDIA_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif", "image/avif"})


def _opt(value: Any) -> Any:
    return _UNSET if value is None else value


class ServiceRunContext:
    min_interval = 0.05
    snapshot_save_interval = 1.0  # seconds between saves of the progress snapshot to the store

    def __init__(self, service: GenerationService, row: GenerationRow) -> None:
        self._service = service
        self._row = row
        self.snapshot: http.ProgressSnapshot | None = None
        self.detaching = False  # True when the process stops: leave upstream work running
        self.closed = False  # the final update is out: later progress is dropped
        self._pending: http.GenerationProgressInput | None = None
        self._last_sent = 0.0
        self._flush_task: asyncio.Task[None] | None = None
        self._snapshot_saved = 0.0
        self._snapshot_task: asyncio.Task[None] | None = None
        self.text = ""  # the whole text streamed so far (the tool's latest partial_text)
        self._sent_text = ""  # the text as of the last published delta
        self._sent_units = 0  # its length in UTF-16 code units (the next textOffset)

    @property
    def generation_id(self) -> str:
        return self._row.id

    @property
    def user_id(self) -> str:
        return self._row.user_id

    @property
    def tool_id(self) -> str:
        return self._row.tool_id

    @property
    def inputs(self) -> dict[str, Any]:
        return self._row.inputs

    @property
    def upstream_ref(self) -> str | None:
        return self._row.upstream_ref

    @property
    def request_sent(self) -> bool:
        return self._row.request_sent_at is not None

    async def progress(self, fraction: float, *, step: int | None = None, total_steps: int | None = None,
                       message: str | None = None, preview: bytes | None = None,
                       preview_media_type: str | None = None, partial_text: str | None = None) -> None:
        if self.closed:
            return  # nothing follows a run's terminal generationUpdate
        fraction = min(1.0, max(0.0, float(fraction)))
        preview_obj: Any = _UNSET
        limit = self._service.publisher.max_event_bytes
        if preview is not None and (len(preview) * 4) // 3 + 256 > limit:
            log.warning("preview dropped: %d bytes would exceed LIVEGATE_MAX_EVENT_BYTES (%d)", len(preview), limit,
                        extra={"generation_id": self._row.id, "user_id": self._row.user_id})
            preview = None
        if preview is not None and (preview_media_type or "image/jpeg") not in PREVIEW_MEDIA_TYPES:
            log.warning("preview dropped: %r is not a passive image type", preview_media_type,
                        extra={"generation_id": self._row.id, "user_id": self._row.user_id})
            preview = None
        if preview is not None:
            media_type = preview_media_type or "image/jpeg"
            url = f"data:{media_type};base64,{base64.b64encode(preview).decode()}"
            preview_obj = http.Preview(media_type=media_type, url=url)
        elif self._pending is not None and self._pending.preview is not _UNSET:
            preview_obj = self._pending.preview  # keep a coalesced preview
        if partial_text is not None:
            self.text = partial_text
        event = http.GenerationProgressInput(
            generation_id=self._row.id, fraction=fraction, step=_opt(step), total_steps=_opt(total_steps),
            message=_opt(message), preview=preview_obj,
        )
        self.snapshot = http.ProgressSnapshot(fraction=fraction, step=_opt(step), total_steps=_opt(total_steps),
                                              message=_opt(message), partial_text=self.text or _UNSET)
        self._pending = event
        self._save_snapshot_soon()
        wait = self._last_sent + self.min_interval - time.monotonic()
        if wait <= 0:
            await self.flush()
        elif self._flush_task is None:
            self._flush_task = asyncio.create_task(self._flush_later(wait))

    def _save_snapshot_soon(self) -> None:
        """Save the snapshot for GET on other processes: at most once per interval, one
        write in flight, never waited for by the tool (a store outage only delays it)."""
        now = time.monotonic()
        if now - self._snapshot_saved < self.snapshot_save_interval:
            return
        if self._snapshot_task is not None and not self._snapshot_task.done():
            return
        self._snapshot_saved = now
        self._snapshot_task = asyncio.create_task(self._save_snapshot())

    async def _save_snapshot(self) -> None:
        snapshot = self.snapshot
        if snapshot is None or self.closed:
            return
        with contextlib.suppress(Exception):  # best effort: the live stream carries progress
            await self._service.store.transition(
                self._row.id, {"running"}, "running", expect_attempt=self._row.attempt,
                progress=msgspec.to_builtins(snapshot))

    async def _flush_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._flush_task = None
        await self.flush()

    async def flush(self) -> None:
        event, self._pending = self._pending, None
        if self._flush_task is not None and self._flush_task is not asyncio.current_task():
            self._flush_task.cancel()
            self._flush_task = None
        if event is not None and not self.closed:
            self._last_sent = time.monotonic()
            for part, sent_text, sent_units in self._with_text(self._bounded(event)):
                if not await self._service.publish(self._row.user_id, part):
                    break  # not on the stream: the next event carries this text again
                self._sent_text, self._sent_units = sent_text, sent_units

    def _with_text(self, event: http.GenerationProgressInput) -> list[tuple[http.GenerationProgressInput, str, int]]:
        """``event`` with the text streamed since the last published one as ``textDelta`` +
        ``textOffset`` (split over several events when it would not fit one), each with the
        sent text and its length once it is published."""
        text, sent = self.text, self._sent_text
        if text == sent:
            return [(event, sent, self._sent_units)]
        if text.startswith(sent):
            common, offset = len(sent), self._sent_units
        else:  # the tool rewrote the text: restart at the common prefix (asyncapi: text[:offset] + delta)
            common = next((i for i, (a, b) in enumerate(zip(text, sent, strict=False)) if a != b),
                          min(len(text), len(sent)))
            offset = utf16_len(text[:common])
        # Encoded JSON takes at most 6 bytes per code point (\u00XX escapes).
        publisher = self._service.publisher
        room = max(256, (publisher.max_event_bytes - 1024 - publisher.encoded_size(event)) // 6)
        parts = []
        for start in range(common, len(text), room):
            piece = text[start:start + room]
            parts.append((msgspec.structs.replace(event, text_delta=piece, text_offset=offset),
                          text[:start + len(piece)], offset + utf16_len(piece)))
            offset += utf16_len(piece)
        if not parts:  # the tool cut its text short: an empty delta where it now ends
            parts.append((msgspec.structs.replace(event, text_delta="", text_offset=offset), text, offset))
        return parts

    def _bounded(self, event: http.GenerationProgressInput) -> http.GenerationProgressInput:
        """``event`` within ``LIVEGATE_MAX_EVENT_BYTES``: as it is, else without its preview
        (logged at warning). Its text is added after (:meth:`_with_text`)."""
        publisher = self._service.publisher
        limit = publisher.max_event_bytes - 64  # the publish adds its timestamp
        size = publisher.encoded_size(event)
        if size <= limit or event.preview is _UNSET:
            return event
        log.warning("progress preview dropped: the event is %d bytes, over LIVEGATE_MAX_EVENT_BYTES", size,
                    extra={"generation_id": self._row.id, "user_id": self._row.user_id})
        return msgspec.structs.replace(event, preview=_UNSET)

    async def store_output(self, data: bytes, *, kind: OutputKind, media_type: str, filename: str | None = None,
                           width: int | None = None, height: int | None = None,
                           duration_seconds: float | None = None) -> StoredOutput:
        output_id = self._service.outputs.new_id()
        text = None
        if kind == "text" and len(data) <= INLINE_TEXT_LIMIT:
            text = data.decode("utf-8", errors="replace")
        row = OutputRow(id=output_id, user_id=self._row.user_id, generation_id=self._row.id, kind=kind,
                        media_type=media_type, size_bytes=len(data), filename=filename, width=width, height=height,
                        duration_seconds=duration_seconds, text=text, created_at=time.time())
        try:
            await self._service.retrying(lambda: self._service.store.write_output(row, data))
        except OutputTooLarge as exc:
            # the run fails with a contract GenerationErrorCode; the store kept nothing
            raise ToolError(exc.message, code="tool_error") from exc
        return StoredOutput(id=output_id, kind=kind, media_type=media_type, size_bytes=len(data), filename=filename,
                            width=width, height=height, duration_seconds=duration_seconds, text=text)

    async def save_upstream_ref(self, ref: str) -> None:
        self._row.upstream_ref = ref
        await self._save_fenced(upstream_ref=ref)

    async def mark_request_sent(self) -> None:
        self._row.request_sent_at = time.time()
        await self._save_fenced(request_sent_at=self._row.request_sent_at)

    async def report_queue_position(self, position: int | None) -> None:
        """A remote queue position (ComfyUI's): saved with the run (``GET`` on any process
        shows it) and published as a ``running`` ``generationUpdate`` when it changed."""
        if self.closed or position == self._row.queue_position:
            return
        self._row.queue_position = position
        await self._save_fenced(queue_position=position)
        await self._service.publish_remote_position(self._row)

    async def _save_fenced(self, **fields: Any) -> None:
        """Save a field of this run unless another runner has taken it over (then this
        one must stop: its work is no longer the run's)."""
        store = self._service.store
        saved = await self._service.retrying(lambda: store.transition(
            self._row.id, {"running"}, "running", expect_attempt=self._row.attempt, **fields))
        if saved is None:
            raise asyncio.CancelledError("the run was taken over or ended elsewhere")
