"""The thin Litestar I/O layer: WebSocket pump, HTTP routes of openapi.yaml, lifecycle."""

from livegate.app.factory import create_app
from livegate.app.gateway import Gateway

__all__ = ["Gateway", "create_app"]
