"""The small interface every tool implements, and what a tool may ask of its run.

A *tool* turns validated ``inputs`` into typed outputs (image, text, audio, video, file)
and reports progress on the way. It never touches the bus, the database or WebSockets:
the generation service (``livegate.service``) hands it a :class:`RunContext` and turns
what the tool reports into the contract events ``generationProgress`` and
``generationUpdate`` (asyncapi.yaml).

Cancellation is asyncio cancellation: when the user cancels or the tool's timeout fires,
the service cancels the task running :meth:`Tool.run`; a tool that started upstream work
(a ComfyUI prompt, an HTTP stream) must stop it in its ``except CancelledError`` /
``finally`` block and re-raise — unless :attr:`RunContext.detaching` says the gateway is
stopping, in which case work that can be re-attached after the restart is left running.

Errors: a tool raises :class:`livegate.errors.ToolError` with a contract
``GenerationErrorCode``; anything else is reported as ``tool_error``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

OutputKind = Literal["image", "text", "audio", "video", "file"]


@dataclass(frozen=True, slots=True)
class StoredOutput:
    """An output saved in the output store; ``url`` is filled in by the service."""

    id: str
    kind: OutputKind
    media_type: str
    size_bytes: int
    filename: str | None = None
    width: int | None = None
    height: int | None = None
    duration_seconds: float | None = None
    text: str | None = None  # inline copy for short text outputs


class RunContext(Protocol):
    """What a running tool may do. Implemented by the generation service."""

    @property
    def generation_id(self) -> str: ...

    @property
    def user_id(self) -> str: ...

    @property
    def inputs(self) -> dict[str, Any]: ...

    @property
    def upstream_ref(self) -> str | None:
        """The reference saved by :meth:`save_upstream_ref` (set when re-attaching)."""

    @property
    def request_sent(self) -> bool:
        """``True`` once :meth:`mark_request_sent` was called for this run (by any process)."""

    @property
    def detaching(self) -> bool:
        """``True`` when the run is being cancelled because the *gateway* stops, not
        because the user cancelled or the timeout fired: leave re-attachable upstream
        work running (the next start re-attaches to it by :attr:`upstream_ref`)."""

    async def progress(
        self,
        fraction: float,
        *,
        step: int | None = None,
        total_steps: int | None = None,
        message: str | None = None,
        preview: bytes | None = None,
        preview_media_type: str | None = None,
        partial_text: str | None = None,
    ) -> None:
        """Publish a ``generationProgress``. ``partial_text`` is the *whole* text so far
        (not a delta); the gateway sends what was added since the last event as
        ``textDelta`` + ``textOffset`` (asyncapi.yaml, "Streamed text")."""

    async def store_output(
        self,
        data: bytes,
        *,
        kind: OutputKind,
        media_type: str,
        filename: str | None = None,
        width: int | None = None,
        height: int | None = None,
        duration_seconds: float | None = None,
    ) -> StoredOutput:
        """Save bytes in the output store and return the typed output record."""

    async def mark_request_sent(self) -> None:
        """Durably record that a request that cannot be repeated safely (it costs money or
        its answer goes only to this connection) is about to go upstream: a process that
        takes the run over after a crash then fails it instead of sending it again."""

    async def save_upstream_ref(self, ref: str) -> None:
        """Durably remember an upstream handle (e.g. a ComfyUI prompt id) so that a
        restarted process can re-attach to the run instead of failing it."""

    async def report_queue_position(self, position: int | None) -> None:
        """The run's work waits in the upstream's own queue at ``position`` (1 = next; e.g.
        a ComfyUI prompt behind others), or no longer waits (``None``). Published as the
        run's ``queuePosition`` when it changes (asyncapi.yaml ``QueuePosition``)."""


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """How a tool is declared in the tools config file (``tools.toml``)."""

    id: str
    kind: str  # "demo" | "openai" | "comfyui"
    title: str
    settings: dict[str, Any] = field(default_factory=dict)
    timeout_seconds: float = 600.0
    max_concurrency: int = 4


class Tool(Protocol):
    """A runnable tool. One instance per configured tool id, shared by all runs."""

    spec: ToolSpec

    @property
    def input_schema(self) -> dict[str, Any]:
        """JSON Schema (draft 2020-12) of ``inputs``; the sandbox builds its form from it."""

    async def run(self, ctx: RunContext) -> list[StoredOutput]:
        """Run to completion and return the outputs, or raise ``ToolError``."""

    async def reattach(self, ctx: RunContext) -> list[StoredOutput] | None:
        """Take over a run that was in flight when the process running it stopped or died.

        Re-attach to the upstream work (by :attr:`RunContext.upstream_ref`), or run again
        when that is safe (a deterministic tool; a request never sent). Return ``None``
        when neither is possible: the service fails the generation with
        ``interrupted_by_restart``.
        """

    async def aclose(self) -> None:
        """Release clients and connections."""
