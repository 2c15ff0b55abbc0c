"""Streamed downloads of the portal: the Export page's archive (``storage.snapshot.stream_snapshot``) is made
while the browser reads it, as a response of the portal's own ASGI app (``portal/asgi.py``), so a network of
any size needs neither a file nor the whole archive in memory.

The page (a logged-in user) *offers* a download: what to export, under a random one-time token valid for
:data:`OFFER_TTL` seconds, bound to the user's cookie session (``portal.sessions``) when there is one. The
route ``/_devicevault/export/<token>`` takes the offer (once) and streams the archive; a used, expired or
foreign token is refused (403). No Streamlit here.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from portal import sessions

EXPORT_PATH = "/_devicevault/export"
#: how long an offered download may wait for the browser (seconds)
OFFER_TTL = 300.0


@dataclass(frozen=True)
class ExportOffer:
    at: str  # ISO 8601, the moment (a run's end already resolved)
    run_id: str
    groups: tuple[str, ...]
    file_name: str
    user: str
    sid: str | None  # the cookie session that may take it (None: the token alone)


class Offers:
    """The portal process's offered downloads (thread safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offers: dict[str, tuple[ExportOffer, float]] = {}

    def offer(self, item: ExportOffer) -> str:
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._offers = {t: v for t, v in self._offers.items() if now - v[1] < OFFER_TTL}
            self._offers[token] = (item, now)
        return token

    def take(self, token: str, sid: str | None) -> ExportOffer | None:
        """The offer of ``token`` (once, within :data:`OFFER_TTL`, from its own session), else None."""
        with self._lock:
            got = self._offers.get(token)
            if got is None or time.monotonic() - got[1] >= OFFER_TTL:
                self._offers.pop(token, None)
                return None
            if got[0].sid is not None and got[0].sid != sid:
                return None
            del self._offers[token]
            return got[0]


OFFERS = Offers()


def url_of(token: str) -> str:
    return f"{EXPORT_PATH}/{token}"


def _settings():
    from jobs.settings import Settings

    return Settings.load()


async def export_route(request: Request) -> Response:
    """``GET /_devicevault/export/<token>``: the offered archive, streamed."""
    from datetime import datetime

    from starlette.concurrency import run_in_threadpool

    settings = _settings()
    sid = sessions.unsign(request.cookies.get(sessions.COOKIE), sessions.secret_key(settings.home))
    item = OFFERS.take(str(request.path_params.get("token", ""))[:100], sid)
    if item is None:
        return Response("This download has expired or was used already: make a new one on the Export page.",
                        status_code=403, headers={"Cache-Control": "no-store"})

    def entries():
        from storage.index.db import connect
        from storage.snapshot import versions_at

        with connect(settings.database_url, settings.index_wait)() as session:
            return list(versions_at(session, datetime.fromisoformat(item.at), item.groups))

    from jobs.deliver.locations import StorageLayout
    from storage.snapshot import stream_snapshot

    found = await run_in_threadpool(entries)
    layout = StorageLayout.load(settings)
    body = stream_snapshot(found, layout.open, at=datetime.fromisoformat(item.at), run_id=item.run_id)
    return StreamingResponse(body, media_type="application/gzip", headers={
        "Content-Disposition": f'attachment; filename="{item.file_name}"', "Cache-Control": "no-store"})
