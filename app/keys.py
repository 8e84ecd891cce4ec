"""Every Redis key the service reads or writes is built here.

A user's keys share one hash tag, ``{tenant|user}``, so the scripts that
touch a session and the user's session index run on one Redis Cluster slot.
Tenant, user and session ids are validated elsewhere to exclude ``:``, ``|``,
``{`` and ``}``, so no two scopes can produce the same key.
"""

from __future__ import annotations

from dataclasses import dataclass

STREAM_GROUP = "promotion"


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """The keys that hold one session's short-term window."""

    window: str
    """Sorted set of turn ids, scored by their order of arrival."""
    turns: str
    """Hash of turn id to the turn as JSON."""
    meta: str
    """Hash with the session's sequence counter and timestamps."""
    user_sessions: str
    """Sorted set of the user's session ids, scored by last activity (ms)."""


@dataclass(frozen=True, slots=True)
class KeyBuilder:
    """Builds namespaced keys under one prefix."""

    prefix: str = "engram"

    def user_tag(self, tenant_id: str, user_id: str) -> str:
        return f"{self.prefix}:{{{tenant_id}|{user_id}}}"

    def user_sessions(self, tenant_id: str, user_id: str) -> str:
        return f"{self.user_tag(tenant_id, user_id)}:sessions"

    def session(self, tenant_id: str, user_id: str, session_id: str) -> SessionKeys:
        base = f"{self.user_tag(tenant_id, user_id)}:session:{session_id}"
        return SessionKeys(
            window=f"{base}:window",
            turns=f"{base}:turns",
            meta=f"{base}:meta",
            user_sessions=self.user_sessions(tenant_id, user_id),
        )

    @property
    def stream(self) -> str:
        """The stream of accepted turns that the promotion worker consumes."""
        return f"{self.prefix}:stream:turns"

    @property
    def dead_letter_stream(self) -> str:
        """Events that failed promotion too often, with their last error."""
        return f"{self.prefix}:stream:turns:dead"

    @property
    def failure_counts(self) -> str:
        """Hash of event id to the number of failed promotion attempts."""
        return f"{self.prefix}:stream:turns:failures"

    @property
    def learning_due(self) -> str:
        """Sorted set of sessions to learn from, scored by when they are due (epoch seconds)."""
        return f"{self.prefix}:learning:due"

    @property
    def learning_pending(self) -> str:
        """Hash of session to the number of turns promoted since it was last claimed."""
        return f"{self.prefix}:learning:pending"
