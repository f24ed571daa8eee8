"""Reading a tool's ``settings`` table and checking its ``inputs``, with errors that say
which tool and which key is wrong.

* :class:`ToolConfigError` — the tools config is wrong (unknown kind, bad or unknown
  setting, unreadable workflow file). Raised when tools are loaded or built, never while a
  generation runs.
* :func:`validate_inputs` — JSON Schema 2020-12 validation plus top-level defaults
  (integral numbers such as ``2.0`` become ``int`` where the schema says ``integer``); a
  refusal is ``ToolError(code="invalid_inputs")``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, TypeVar

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from livegate.errors import LivegateError, ToolError

__all__ = ["SettingsReader", "ToolConfigError", "check_schema", "validate_inputs"]

T = TypeVar("T")
_MISSING: Any = object()


class ToolConfigError(LivegateError):
    """The tools configuration is invalid; the message names the tool and the key."""

    code = "tool_config_invalid"


class SettingsReader:
    """Typed access to ``spec.settings``; call :meth:`finish` to refuse unknown keys."""

    def __init__(self, tool_id: str, kind: str, settings: Mapping[str, Any]) -> None:
        self._where = f"tool {tool_id!r} (kind {kind!r})"
        self._settings = dict(settings)
        self._seen: set[str] = set()

    def error(self, key: str, problem: str) -> ToolConfigError:
        return ToolConfigError(f"{self._where}: setting {key!r} {problem}")

    def _get(self, key: str, default: Any) -> Any:
        self._seen.add(key)
        if key in self._settings:
            return self._settings[key]
        if default is _MISSING:
            raise self.error(key, "is required")
        return default

    def has(self, key: str) -> bool:
        return key in self._settings

    def string(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is not default and not isinstance(value, str):
            raise self.error(key, f"must be a string, not {type(value).__name__}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: Any = _MISSING) -> Any:
        value = self.string(key, default)
        if value is not default and value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    def number(
        self, key: str, default: Any = _MISSING, *, minimum: float | None = None, integer: bool = False
    ) -> Any:
        value = self._get(key, default)
        if value is default or value is None:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
            raise self.error(key, f"must be {'an integer' if integer else 'a number'}")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be >= {minimum}; got {value}")
        return value

    def mapping(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is not default and not isinstance(value, Mapping):
            raise self.error(key, "must be a table")
        return value

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        return self._get(key, default)

    def finish(self) -> None:
        unknown = sorted(set(self._settings) - self._seen)
        if unknown:
            raise ToolConfigError(f"{self._where}: unknown setting(s) {', '.join(unknown)}")


def check_schema(schema: Mapping[str, Any], where: str) -> None:
    """Refuse an input schema that is not valid JSON Schema 2020-12."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ToolConfigError(f"{where}: invalid input schema: {exc.message}") from None


def validate_inputs(schema: Mapping[str, Any], inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``inputs`` with the schema's top-level defaults filled in, or raise
    ``ToolError(code="invalid_inputs")`` naming the first offending path."""
    filled = dict(inputs)
    for name, prop in (schema.get("properties") or {}).items():
        if name not in filled and isinstance(prop, Mapping) and "default" in prop:
            filled[name] = copy.deepcopy(prop["default"])
    validator = Draft202012Validator(schema)
    error = next(iter(sorted(validator.iter_errors(filled), key=lambda e: list(e.path))), None)
    if error is not None:
        path = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise ToolError(f"invalid inputs at {path}: {error.message}", code="invalid_inputs")
    integral: dict[str, Any] = _integers(schema, filled)
    return integral


def _integers(schema: Any, value: Any) -> Any:
    """JSON Schema counts ``2.0`` as an integer: hand the tool an ``int`` for it."""
    if not isinstance(schema, Mapping):
        return value
    types = schema.get("type")
    if isinstance(value, float) and (types == "integer" or (isinstance(types, list) and "integer" in types)):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        return {k: _integers(props.get(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integers(schema.get("items"), v) for v in value]
    return value
