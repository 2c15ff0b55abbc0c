"""The portal as Streamlit's own ASGI app (``st.App``), served by ``devicevault portal`` (``streamlit run
portal/asgi.py``): ``portal/app.py`` plus the two routes of the session cookie (``portal.sessions``) and the streamed downloads
(``portal.downloads``)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

from portal import downloads, sessions  # noqa: E402


def _key() -> bytes:
    from jobs.settings import Settings

    return sessions.secret_key(Settings.load().home)


def _secure(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"


async def session_cookie(request: Request) -> Response:
    """A grant (the request's body) for the signed session cookie."""
    grant = (await request.body()).decode("ascii", "replace").strip()[:100]
    sid = sessions.STORE.redeem(grant)
    if sid is None:
        return Response("no such grant", status_code=403)
    response = Response(status_code=204, headers={"Cache-Control": "no-store"})
    response.set_cookie(sessions.COOKIE, sessions.sign(sid, _key()), max_age=sessions.MAX_AGE, path="/",
                        httponly=True, samesite="strict", secure=_secure(request))
    return response


async def logout(request: Request) -> Response:
    """Ends the cookie's session and removes the cookie."""
    sessions.STORE.end(sessions.unsign(request.cookies.get(sessions.COOKIE), _key()))
    response = Response(status_code=204, headers={"Cache-Control": "no-store"})
    response.delete_cookie(sessions.COOKIE, path="/", httponly=True, samesite="strict", secure=_secure(request))
    return response


app = st.App("app.py", routes=[Route(sessions.SESSION_PATH, session_cookie, methods=["POST"]),
                               Route(sessions.LOGOUT_PATH, logout, methods=["POST"]),
                               Route(downloads.EXPORT_PATH + "/{token}", downloads.export_route, methods=["GET"])])
