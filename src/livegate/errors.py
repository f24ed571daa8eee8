"""One exception root for livegate; every error carries the contract code to answer with.

::

    LivegateError
    ├── ContractError            bad input, answered with an ``error`` frame / problem body
    ├── AuthError                token refused (``code`` is an ErrorCode from asyncapi.yaml)
    ├── BusError                 the bus cannot publish or read (Redis down, ...)
    │   └── BusUnavailable
    ├── EventTooLarge            a published event over LIVEGATE_MAX_EVENT_BYTES
    ├── TooManyQueued            a user's queued generations are at the fair-use cap (HTTP 429)
    ├── IllegalTransition        generation state machine refused a move
    ├── NotFound
    ├── StoreError               the generation store refused or failed an operation
    │   ├── StoreUnavailable     the database cannot be reached (HTTP 503 ``database_unavailable``)
    │   └── OutputTooLarge       an output exceeds ``LIVEGATE_MAX_OUTPUT_BYTES``; nothing was kept
    └── ToolError                a tool run failed (``code`` is a GenerationErrorCode)

Third-party exceptions (PyJWT, redis-py, httpx, websockets, SQLAlchemy and its drivers)
are mapped onto this tree at
the adapter that calls the library; nothing above the adapters catches library errors.
"""

from __future__ import annotations


class LivegateError(Exception):
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ContractError(LivegateError):
    code = "invalid_message"

    def __init__(self, message: str, *, code: str | None = None, path: str | None = None):
        super().__init__(message, code=code)
        self.path = path


class AuthError(LivegateError):
    code = "token_malformed"  # an ErrorCode of asyncapi.yaml (a code outside it would close 4500)


class BusError(LivegateError):
    code = "bus_unavailable"


class BusUnavailable(BusError):
    """The bus is down. ``published`` holds the positions of the items of the failed call
    that were appended before the failure (a prefix), so nothing is reported wrongly."""

    def __init__(self, message: str, *, published: list | None = None) -> None:  # type: ignore[type-arg]
        super().__init__(message)
        self.published = list(published or [])


class EventTooLarge(LivegateError):
    """Events of one publish over the per-event byte limit; ``sizes`` maps each one's index
    in the batch to its encoded size. Nothing of that publish was appended."""

    code = "payload_too_large"

    def __init__(self, message: str, *, sizes: dict[int, int], limit: int) -> None:
        super().__init__(message)
        self.sizes, self.limit = sizes, limit


class TooManyQueued(LivegateError):
    code = "too_many_queued"


class IllegalTransition(LivegateError):
    code = "illegal_transition"


class NotFound(LivegateError):
    code = "not_found"


class StoreError(LivegateError):
    code = "internal_error"


class StoreUnavailable(StoreError):
    """The database did not answer (connection refused or lost, pool timeout, locked for
    too long). The operation may be retried; a write that raised this may or may not have
    been applied, so callers retry with conditional updates (``transition``)."""

    code = "database_unavailable"


class OutputTooLarge(StoreError):
    """An output's bytes exceed the store's limit. The partial output was removed."""

    code = "output_too_large"

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class ToolError(LivegateError):
    """A tool run failed. ``code`` is one of the contract's GenerationErrorCode values:

    ``tool_error``, ``invalid_inputs``, ``upstream_unauthorized``, ``upstream_bad_request``,
    ``upstream_rate_limited``, ``upstream_unavailable``, ``upstream_timeout``,
    ``upstream_protocol_error``, ``execution_error``, ``timeout``, ``interrupted_by_restart``.
    """

    code = "tool_error"

    def __init__(self, message: str, *, code: str | None = None, node_id: str | None = None):
        super().__init__(message, code=code)
        self.node_id = node_id
