"""Sign-in sessions, kept in this process's memory.

The browser holds only a random session id (256 bits) in an HttpOnly, SameSite=Strict
cookie (Secure over TLS); the gateway token it signed in with stays here and is sent
to the config service with every call made for that session. A session ends at its
expiry, at sign-out, or when the config service stops accepting its token. Each session
has its own CSRF token, compared in constant time on every form post. A restart signs
everyone out (nothing is written to disk).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

COOKIE = "aibridge_console"
PRE_COOKIE = "aibridge_console_signin"  # the sign-in form's own CSRF value (no session yet)
MAX_SESSIONS = 10_000  # past this the oldest session is dropped


@dataclass
class Session:
    id: str = field(repr=False)
    token: str = field(repr=False)
    principal_id: str
    principal_name: str
    role: str  # owner, auditor or member
    token_id: str
    csrf: str = field(repr=False)
    expires_at: float  # time.monotonic()

    def csrf_ok(self, given: str) -> bool:
        return hmac.compare_digest(self.csrf.encode(), given.encode())


class SessionStore:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def create(
        self, token: str, principal_id: str, principal_name: str, role: str, token_id: str
    ) -> Session:
        self._expire()
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.popitem(last=False)
        session = Session(
            id=secrets.token_urlsafe(32),
            token=token,
            principal_id=principal_id,
            principal_name=principal_name,
            role=role,
            token_id=token_id,
            csrf=secrets.token_urlsafe(32),
            expires_at=time.monotonic() + self.ttl,
        )
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of a cookie value; None for an unknown, tampered or expired id."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires_at <= time.monotonic():
            self._sessions.pop(session_id, None)
            return None
        return session

    def end(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def end_token(self, token: str) -> None:
        """End every session signed in with `token` (the config service refused it)."""
        for sid in [s.id for s in self._sessions.values() if s.token == token]:
            self._sessions.pop(sid, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _expire(self) -> None:
        now = time.monotonic()
        for sid in [s.id for s in self._sessions.values() if s.expires_at <= now]:
            self._sessions.pop(sid, None)


def cookie_header(name: str, value: str, max_age: int, secure: bool) -> str:
    parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Strict", f"Max-Age={max_age}"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)
