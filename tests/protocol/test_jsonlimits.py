"""The pre-decode depth check is exact for JSON text and never lets deeper text through."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from livegate.protocol.jsonlimits import nesting_error

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab', max_size=6),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                         st.text(alphabet='[]{}"\\k', max_size=4), inner, max_size=3), max_leaves=30)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


@settings(max_examples=300)
@given(value=_json, limit=st.integers(1, 8))
def test_exact_on_json_text_with_brackets_and_escapes_in_strings(value: Any, limit: int) -> None:
    text = json.dumps(value)
    assert (nesting_error(text, limit) is None) == (depth(value) <= limit), text
    assert (nesting_error(text.encode(), limit) is None) == (depth(value) <= limit)


def test_unpaired_and_deep_text_is_refused() -> None:
    assert nesting_error(b"[" * 100, 32) is not None
    assert nesting_error(b"]" * 40 + b"[" * 40, 32) is not None
    assert nesting_error(b"[" * 33 + b"]" * 33, 32) is not None
    assert nesting_error(b"[" * 32 + b"]" * 32, 32) is None
