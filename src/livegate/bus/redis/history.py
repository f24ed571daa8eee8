"""What this process saw of the data's history, passed to every script as its witness.

``scripts/history.lua`` keeps, per Redis data set, a generation, the replication id of the
server run that last touched it and a count of publish calls. A server run that starts
(restart, promotion) on data that lost writes cannot know it lost them; a gateway that saw
more calls than the data kept can. So every script call carries the ``(gen, rid, w)`` this
process last saw, and the script starts a new generation (every stream a new epoch:
``recovered: false``) when that witness proves a rewind. See docs/scaling.md, "Rewinds".
"""

from __future__ import annotations

from typing import Any


class Witness:
    """The newest ``(gen, rid, w)`` any reply showed this process (of one data set)."""

    __slots__ = ("gen", "rid", "w")

    def __init__(self) -> None:
        self.gen = ""
        self.rid = ""
        self.w = 0

    def args(self, candidate: str) -> list[Any]:
        """The script arguments: the witness, then a generation candidate."""
        return [self.gen, self.rid, self.w, candidate]

    def saw(self, gen: bytes | str, rid: bytes | str, w: int | bytes) -> None:
        """Record a reply's view. Replies of one run only ever grow ``w``; a reply of
        another generation or run replaces the view (an older reply read late is still a
        true observation of its run, so it can never prove a rewind that did not happen)."""
        gen_text = gen.decode() if isinstance(gen, bytes) else gen
        rid_text = rid.decode() if isinstance(rid, bytes) else rid
        count = int(w)
        if gen_text != self.gen or rid_text != self.rid:
            self.gen, self.rid, self.w = gen_text, rid_text, count
        elif count > self.w:
            self.w = count


__all__ = ["Witness"]
