"""This process's open connections, per user: connection limits and graceful shutdown."""

from __future__ import annotations

from typing import Protocol


class HubMember(Protocol):
    id: str

    def request_close(self, code: str, message: str, *, flush: bool) -> None: ...


class Hub:
    def __init__(self, max_per_user: int) -> None:
        self.max_per_user = max_per_user
        self._by_user: dict[str, dict[str, HubMember]] = {}
        self.accepting = True

    def register(self, user_id: str, member: HubMember) -> bool:
        """Add a connection; ``False`` when the user is at the limit (or we are draining)."""
        if not self.accepting:
            return False
        members = self._by_user.setdefault(user_id, {})
        if len(members) >= self.max_per_user:
            return False
        members[member.id] = member
        return True

    def unregister(self, user_id: str, member: HubMember) -> None:
        members = self._by_user.get(user_id)
        if members is not None:
            members.pop(member.id, None)
            if not members:
                del self._by_user[user_id]

    def count(self, user_id: str | None = None) -> int:
        if user_id is not None:
            return len(self._by_user.get(user_id, {}))
        return sum(len(m) for m in self._by_user.values())

    def members_of(self, user_id: str) -> list[HubMember]:
        return list(self._by_user.get(user_id, {}).values())

    def members(self) -> list[HubMember]:
        return [m for members in self._by_user.values() for m in members.values()]
