"""Portal sessions that survive a reload, a new tab and a shared link: a signed, HttpOnly, expiring cookie.

After a login the portal keeps a session on the server (a random id, the user, when it was last used) and
hands the browser a one-time *grant* (random, valid for a minute). The page posts the grant to
``/_devicevault/session`` (a route of the portal's own ``st.App``, ``portal/asgi.py``), which answers with the
cookie ``devicevault_session``: the session id signed with HMAC-SHA256 under a secret generated once in
``$DEVICEVAULT_HOME/portal-session.key`` (mode 0600), ``HttpOnly``, ``SameSite=Strict``, ``Secure`` over HTTPS,
``Max-Age`` :data:`MAX_AGE`. Streamlit sends the cookie with the WebSocket of every new tab or reload
(``st.context.cookies``), so the user is found again while the session is alive.

A session ends after ``DEVICEVAULT_PORTAL_IDLE_TIMEOUT`` seconds without use in any of its tabs, after
:data:`MAX_AGE` in any case, at log out (in every tab), when the user is removed, and when the portal
restarts (the sessions live in the portal process, like the failed-login counts). No Streamlit here.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

COOKIE = "devicevault_session"
SESSION_PATH = "/_devicevault/session"
LOGOUT_PATH = "/_devicevault/logout"
#: the longest a session lives, used or not (seconds)
MAX_AGE = 12 * 3600
#: how long a grant may wait for the browser to redeem it (seconds)
GRANT_TTL = 60.0
KEY_FILE = "portal-session.key"


def secret_key(home: Path | str) -> bytes:
    """The signing secret: ``home/portal-session.key``, created once (32 random bytes, mode 0600)."""
    path = Path(home) / KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return bytes.fromhex(path.read_text().strip())


def sign(sid: str, key: bytes) -> str:
    return f"{sid}.{hmac.new(key, sid.encode(), hashlib.sha256).hexdigest()}"


def unsign(value: str | None, key: bytes) -> str | None:
    """The session id of a cookie value whose signature holds, else None."""
    if not value or "." not in value:
        return None
    sid, mac = value.rsplit(".", 1)
    good = hmac.new(key, sid.encode(), hashlib.sha256).hexdigest()
    return sid if hmac.compare_digest(mac, good) else None


@dataclass
class Session:
    user: str
    created: float
    seen: float


class SessionStore:
    """The portal process's sessions (thread safe; times are ``time.monotonic()``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._grants: dict[str, tuple[str, float]] = {}

    def create(self, user: str) -> tuple[str, str]:
        """A new session for ``user``: (session id, one-time grant for the cookie)."""
        now = time.monotonic()
        sid, grant = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[sid] = Session(user, now, now)
            self._grants = {g: v for g, v in self._grants.items() if now - v[1] < GRANT_TTL}
            self._grants[grant] = (sid, now)
        return sid, grant

    def redeem(self, grant: str) -> str | None:
        """The session id of a grant (once, within :data:`GRANT_TTL`), else None."""
        with self._lock:
            got = self._grants.pop(grant, None)
            if got is None or time.monotonic() - got[1] >= GRANT_TTL or got[0] not in self._sessions:
                return None
            return got[0]

    def use(self, sid: str | None, idle: float) -> tuple[str | None, float | None]:
        """(user, None) for a live session, now marked as used; (None, idle seconds) for one that just
        ended for being idle; (None, None) for an unknown or ended one."""
        if not sid:
            return None, None
        now = time.monotonic()
        with self._lock:
            s = self._sessions.get(sid)
            if s is None:
                return None, None
            if now - s.created >= MAX_AGE:
                del self._sessions[sid]
                return None, None
            if idle > 0 and now - s.seen > idle:
                del self._sessions[sid]
                return None, idle
            s.seen = now
            return s.user, None

    def end(self, sid: str | None) -> None:
        if sid:
            with self._lock:
                self._sessions.pop(sid, None)


STORE = SessionStore()
