"""Failed portal logins: growing delays and a temporary lockout, per user name and per client (no Streamlit).

Every failed login counts against the user name tried and against the client's address. From the third
failure in a row on either, the next attempt must wait ``delay`` seconds, doubling with each further failure
(at most :data:`MAX_DELAY`); after ``attempts`` failures the user name, or the client, is locked out for
``lockout`` seconds (from every client, or for every user name). An attempt made while waiting or locked out
is refused without checking the password (so it tells nothing), and does not extend the wait. A successful
login clears the user's and the client's record; a record with no failure for ``lockout`` seconds is
forgotten.

The records live in the portal process (every session of it shares them): a restart forgets them.

The client is the connection's peer (:func:`client_of`); behind a reverse proxy that is the proxy, which
would make every user share one count (and one lockout), unless the proxy is named in
``DEVICEVAULT_PORTAL_TRUSTED_PROXIES``: then the client is the address the proxies put in
``X-Forwarded-For``.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

#: the longest wait between two attempts before the lockout
MAX_DELAY = 60.0
#: failures in a row before attempts are delayed
FREE_FAILURES = 2
#: records kept at the most (forgotten oldest first beyond it)
MAX_RECORDS = 100_000


@dataclass
class _Record:
    failures: int = 0
    last: float = 0.0
    locked_until: float = 0.0
    next_allowed: float = 0.0


@dataclass(frozen=True)
class Refusal:
    """Why an attempt is refused now: ``what`` is ``user NAME`` or ``client ADDRESS``; ``locked`` tells a
    lockout from a delay; ``seconds`` how long until the next attempt is allowed."""

    what: str
    locked: bool
    seconds: float

    def message(self) -> str:
        wait = _duration(self.seconds)
        if self.locked:
            return f"Too many failed logins: locked out, try again in {wait}."
        return f"Too many failed logins: wait {wait} before the next attempt."


@dataclass(frozen=True)
class Failure:
    """A counted failure: the failures in a row of the user name and of the client, and any lockout it
    started (``locked``: what was locked out)."""

    user_failures: int
    client_failures: int
    locked: tuple[str, ...] = ()


def client_of(peer: str | None, forwarded_for: str | None, trusted: Iterable[str] = ()) -> str:
    """The client's address: the connection's ``peer``; when that is a ``trusted`` reverse proxy, the
    rightmost address of ``X-Forwarded-For`` that is not itself a trusted proxy (a client can put anything
    at the left of that header, never what the proxies append to its right). ``unknown`` without a peer."""
    trusted = set(trusted)
    client = peer or "unknown"
    if client in trusted and forwarded_for:
        for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
            client = hop
            if hop not in trusted:
                break
    return client


def _duration(seconds: float) -> str:
    seconds = max(1, math.ceil(seconds))
    if seconds < 120:
        return f"{seconds} s"
    return f"{math.ceil(seconds / 60)} min"


class LoginLimiter:
    """The failed-login records of one portal process. Thread safe."""

    def __init__(self, attempts: int = 10, delay: float = 1.0, lockout: float = 900.0,
                 clock: Callable[[], float] = time.monotonic):
        self.attempts = max(1, int(attempts))
        self.delay = max(0.0, float(delay))
        self.lockout = max(0.0, float(lockout))
        self.clock = clock
        self._records: dict[tuple[str, str], _Record] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _keys(user: str, client: str) -> tuple[tuple[str, str], tuple[str, str]]:
        return ("user", str(user).strip().lower()), ("client", str(client))

    def refused(self, user: str, client: str) -> Refusal | None:
        """Why an attempt for ``user`` from ``client`` may not be made now, or None."""
        now = self.clock()
        worst: Refusal | None = None
        with self._lock:
            for kind, name in self._keys(user, client):
                record = self._records.get((kind, name))
                if record is None:
                    continue
                if record.locked_until > now:
                    refusal = Refusal(f"{kind} {name}", True, record.locked_until - now)
                elif record.next_allowed > now:
                    refusal = Refusal(f"{kind} {name}", False, record.next_allowed - now)
                else:
                    continue
                if worst is None or (refusal.locked, refusal.seconds) > (worst.locked, worst.seconds):
                    worst = refusal
        return worst

    def failed(self, user: str, client: str) -> Failure:
        """Count a failed login of ``user`` from ``client``."""
        now = self.clock()
        counts: list[int] = []
        locked: list[str] = []
        with self._lock:
            self._forget(now)
            for kind, name in self._keys(user, client):
                record = self._records.setdefault((kind, name), _Record())
                if record.locked_until and record.locked_until <= now:  # a lockout that ended starts afresh
                    record.failures, record.locked_until = 0, 0.0
                record.failures += 1
                record.last = now
                if record.failures >= self.attempts:
                    record.locked_until = now + self.lockout
                    locked.append(f"{kind} {name}")
                elif record.failures > FREE_FAILURES:
                    record.next_allowed = now + min(MAX_DELAY, self.delay * 2 ** (record.failures - FREE_FAILURES - 1))
                counts.append(record.failures)
        return Failure(counts[0], counts[1], tuple(locked))

    def succeeded(self, user: str, client: str) -> None:
        with self._lock:
            for key in self._keys(user, client):
                self._records.pop(key, None)

    def _forget(self, now: float) -> None:
        """Drop records with no failure for ``lockout`` seconds (and no lockout running); the oldest beyond
        :data:`MAX_RECORDS`."""
        if len(self._records) < 1000:
            return
        horizon = now - max(self.lockout, MAX_DELAY)
        for key in [k for k, r in self._records.items() if r.last < horizon and r.locked_until <= now]:
            del self._records[key]
        while len(self._records) > MAX_RECORDS:
            del self._records[min(self._records, key=lambda k: self._records[k].last)]
