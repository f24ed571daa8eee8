"""The contract toolchain: bundle the specs, generate code from them, check for drift.

``livegate contract generate`` rewrites every generated file from ``asyncapi.yaml`` and
``openapi.yaml``; ``livegate contract check`` exits non-zero when any of them is stale.
See docs/contract.md for what is generated and why the little that is hand-written is.
"""

from livegate.contract.generate import GENERATED_FILES, check, generate

__all__ = ["GENERATED_FILES", "check", "generate"]
