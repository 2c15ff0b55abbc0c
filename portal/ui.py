"""What every page shares: settings, index sessions, the storage layout, the logged-in user, readable errors.

Nothing here shows data: :func:`run_page` refuses to render a page unless someone is logged in, and turns
any exception into a one-paragraph message (the traceback goes to the log, never to the browser).
Credentials never reach a page: URLs print through ``redact_url`` and every error message is masked with
the settings' secrets.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from datetime import datetime
from typing import Callable

import streamlit as st

from jobs.settings import Settings, redact_url

from .logins import LoginLimiter, client_of
from .users import User, UsersError, UsersFile

log = logging.getLogger("devicevault.portal")

USER_KEY = "portal_user"
#: when the session was last used (time.monotonic()), for the idle timeout
SEEN_KEY = "portal_last_seen"
#: set when a session ended for being idle: the login page says so once
EXPIRED_KEY = "portal_session_expired"
#: the session's id in ``portal.sessions`` (its cookie is signed with ``session_key()``)
SID_KEY = "portal_session_id"
#: a grant the page still has to trade for the session cookie
GRANT_KEY = "portal_session_grant"
_lock = threading.Lock()
_layouts: dict[tuple, object] = {}
_users_files: dict[str, UsersFile] = {}
_inventories: dict[str, tuple[float, dict]] = {}
_limiters: dict[tuple, LoginLimiter] = {}
_keys: dict = {}


# --- the installation -----------------------------------------------------------------------------------
def settings() -> Settings:
    return Settings.load()


def sessions(s: Settings | None = None):
    """A session factory for the index (engine and migrations once per process)."""
    from storage.index.db import connect

    s = s or settings()
    return connect(s.database_url, s.index_wait)


def layout(s: Settings | None = None):
    """The storage layout (backends opened once per process and settings)."""
    from jobs.deliver.locations import StorageLayout

    s = s or settings()
    stamp = None
    if s.storage_config is not None:
        try:
            stamp = s.storage_config.stat().st_mtime_ns
        except OSError:
            stamp = -1
    key = (repr(s), tuple(sorted(s.target_env.items())), stamp)
    with _lock:
        if key not in _layouts:
            _layouts[key] = StorageLayout.load(s)
        return _layouts[key]


def users_file(s: Settings | None = None) -> UsersFile:
    s = s or settings()
    path = str(s.users_file or (s.home / "users.yml"))
    with _lock:
        if path not in _users_files:
            _users_files[path] = UsersFile(path)
        return _users_files[path]


def inventory(s: Settings | None = None, max_age: float = 60.0) -> dict:
    """The inventory's hosts by name (parsed by Ansible, which takes a second: kept for ``max_age`` s)."""
    from jobs.collect.inventory import load_inventory

    s = s or settings()
    path = str(s.inventory)
    cached = _inventories.get(path)
    if cached and time.monotonic() - cached[0] < max_age:
        return cached[1]
    hosts = load_inventory(path, s)
    _inventories[path] = (time.monotonic(), hosts)
    return hosts


def redis(s: Settings | None = None):
    from redis import Redis

    return Redis.from_url((s or settings()).redis_url, socket_timeout=10, socket_connect_timeout=5)


def login_limiter(s: Settings | None = None) -> LoginLimiter:
    """The process's failed-login records (``portal.logins``), one per limit settings."""
    s = s or settings()
    key = (s.portal_login_attempts, s.portal_login_delay, s.portal_lockout)
    with _lock:
        if key not in _limiters:
            _limiters[key] = LoginLimiter(*key)
        return _limiters[key]


def client_address() -> str:
    """The address of the browser this session talks to (``portal.logins.client_of``: the peer, or what a
    trusted reverse proxy says in X-Forwarded-For), or ``unknown``."""
    try:
        peer, forwarded = st.context.ip_address, st.context.headers.get("X-Forwarded-For")
    except Exception:  # noqa: BLE001 - no request context
        peer = forwarded = None
    return client_of(peer if isinstance(peer, str) else None,  # (a test harness: one client, "unknown")
                     forwarded if isinstance(forwarded, str) else None, settings().portal_trusted_proxies)


# --- the user ---------------------------------------------------------------------------------------------
def current_user() -> User | None:
    """The logged-in user, checked against the users file on every run (a removed user is logged out, a
    changed role applies at once). A session unused for ``DEVICEVAULT_PORTAL_IDLE_TIMEOUT`` seconds ends.

    A new Streamlit session (a reload, a new tab, a link) finds its user through the signed session cookie
    (``portal.sessions``); the session's last use is shared by all its tabs."""
    from . import sessions as cookies

    idle = settings().portal_idle_timeout
    sid = st.session_state.get(SID_KEY)
    if not st.session_state.get(USER_KEY) and sid is None:
        sid = cookies.unsign(_cookie(), session_key())
        if sid is not None:
            name, expired = cookies.STORE.use(sid, idle)
            if name:
                st.session_state[USER_KEY] = name
                st.session_state[SID_KEY] = sid
            elif expired:
                log.info("portal: a session ended after %.0f s without use", expired)
                st.session_state[EXPIRED_KEY] = expired
            return _checked(name) if name else None
    name = st.session_state.get(USER_KEY)
    if not name:
        return None
    if sid is not None:  # a cookie session: its last use is kept for every tab
        alive, expired = cookies.STORE.use(sid, idle)
        if alive != name:
            log.info("portal: %s's session ended", name)
            logout()
            if expired:
                st.session_state[EXPIRED_KEY] = expired
            return None
        return _checked(name)
    now = time.monotonic()
    seen = st.session_state.get(SEEN_KEY, now)
    if idle > 0 and now - seen > idle:
        log.info("portal: %s's session ended after %.0f s without use", name, now - seen)
        logout()
        st.session_state[EXPIRED_KEY] = idle
        return None
    st.session_state[SEEN_KEY] = now
    return _checked(name)


def _checked(name: str) -> User | None:
    try:
        user = users_file().get(name)
    except UsersError:
        user = None
    if user is None:
        logout()
    return user


def _cookie() -> str | None:
    from . import sessions as cookies

    try:
        value = st.context.cookies.get(cookies.COOKIE)
    except Exception:  # noqa: BLE001 - no request context (a test harness)
        return None
    return value if isinstance(value, str) else None


def session_key() -> bytes:
    """The session cookie's signing secret (``$DEVICEVAULT_HOME/portal-session.key``, made once, mode 0600)."""
    from . import sessions as cookies

    home = settings().home
    with _lock:
        if home not in _keys:
            _keys[home] = cookies.secret_key(home)
        return _keys[home]


def login_page() -> None:
    """The only thing shown before login (on whatever page a link asked for: the link's page and query
    parameters stay in the URL, and the page itself appears after the login)."""
    _cookie_script()
    st.title("DeviceVault")
    try:
        known = users_file().users()
    except UsersError as exc:
        st.error(md(mask(str(exc))))
        return
    if not known:
        st.warning("No portal user exists yet. Create one on the server with "
                   "`devicevault users add NAME --role admin`, then log in here.")
        return
    expired = st.session_state.pop(EXPIRED_KEY, None)
    if expired:
        st.info(f"Your session ended after {expired / 60:.0f} minute(s) without use; log in again."
                if expired >= 60 else f"Your session ended after {expired:.0f} s without use; log in again.")
    with st.form("login_form"):
        st.subheader("Log in")
        name = st.text_input("User name", key="login_username")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted:
        _log_in(name, password)


def _log_in(name: str, password: str) -> None:
    """One login attempt: refused while the user name or the client waits or is locked out (the password
    is not checked then), else checked; failures are counted and logged (never the password)."""
    client = client_address()
    limiter = login_limiter()
    refusal = limiter.refused(name, client)
    if refusal is not None:
        log.warning("portal: login for %r from %s refused: %s %s (%.0f s left)", name[:100], client,
                    refusal.what, "locked out" if refusal.locked else "must wait", refusal.seconds)
        st.error(refusal.message())
        return
    user = users_file().authenticate(name, password)
    if user is None:
        failure = limiter.failed(name, client)
        log.warning("portal: failed login for %r from %s (%d in a row for the user name, %d for the client)",
                    name[:100], client, failure.user_failures, failure.client_failures)
        for what in failure.locked:
            log.warning("portal: %s locked out for %.0f s after %d failed logins", what, limiter.lockout,
                        limiter.attempts)
        time.sleep(0.5)  # slows down guessing
        refusal = limiter.refused(name, client)
        st.error("Wrong user name or password." + (f" {refusal.message()}" if refusal else ""))
        return
    limiter.succeeded(name, client)
    log.info("portal: %s logged in (%s) from %s", user.name, user.role, client)
    from . import sessions as cookies

    sid, grant = cookies.STORE.create(user.name)
    st.session_state[USER_KEY] = user.name
    st.session_state[SEEN_KEY] = time.monotonic()
    st.session_state[SID_KEY] = sid
    st.session_state[GRANT_KEY] = grant
    st.session_state.pop("login_password", None)
    st.rerun()  # the same URL: the page asked for (a link opened before login) with its query parameters


def logout() -> None:
    """Ends the session in every tab (its cookie no longer names a live session)."""
    from . import sessions as cookies

    cookies.STORE.end(st.session_state.get(SID_KEY))
    for key in list(st.session_state.keys()):
        del st.session_state[key]


def _log_out() -> None:
    logout()
    st.session_state[GRANT_KEY] = ""  # the next run removes the cookie


def _cookie_script() -> None:
    """Trades a fresh login's grant for the HttpOnly cookie, or removes the cookie after a log out (the
    portal's own routes, ``portal/asgi.py``)."""
    from . import sessions as cookies

    grant = st.session_state.pop(GRANT_KEY, None)
    if grant is None:
        return
    base = "/" + (st.get_option("server.baseUrlPath") or "").strip("/")
    path = base.rstrip("/") + (cookies.SESSION_PATH if grant else cookies.LOGOUT_PATH)
    st.html(f"<script>fetch({path!r}, {{method: 'POST', body: {grant!r}, credentials: 'same-origin'}});</script>",
            unsafe_allow_javascript=True)


def sidebar(user: User) -> None:
    with st.sidebar:
        st.caption(f"Logged in as **{md(user.name)}** ({user.role})")
        st.button("Log out", key="logout", on_click=_log_out)
        _cookie_script()


# --- pages ------------------------------------------------------------------------------------------------
def run_page(render: Callable[[User], None], *, role: str = "viewer") -> None:
    """Render a page for the logged-in user, or nothing; errors become readable messages."""
    user = current_user()
    if user is None:
        st.warning("Please log in.")
        st.stop()
    if not user.can(role):
        st.error(f"This page needs the {role} role; you are {user.role}.")
        return
    try:
        render(user)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a message, never a traceback
        show_error(exc)


def show_error(exc: BaseException, what: str = "") -> None:
    log.warning("portal: %s%s", f"{what}: " if what else "", exc, exc_info=exc)
    st.error((f"{what}: " if what else "") + md(friendly(exc)))


def friendly(exc: BaseException) -> str:
    """One readable sentence for an exception, credentials masked."""
    from jobs.errors import BackupError
    from storage.errors import StorageError
    from storage.index.queries import NotFound

    from .content import SearchError

    try:
        from redis.exceptions import ConnectionError as RedisConnectionError, TimeoutError as RedisTimeout
    except ImportError:  # pragma: no cover
        RedisConnectionError = RedisTimeout = ()  # type: ignore[assignment]
    try:
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError:  # pragma: no cover
        SQLAlchemyError = ()  # type: ignore[assignment]
    s = settings()
    if isinstance(exc, (RedisConnectionError, RedisTimeout)):
        text = f"Redis does not answer at {redact_url(s.redis_url)} ({exc})."
    elif isinstance(exc, SQLAlchemyError):
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        text = f"The index at {redact_url(s.database_url)} cannot be read: {detail}."
    elif isinstance(exc, (NotFound, BackupError, StorageError, UsersError, SearchError)):
        text = str(exc)
        if isinstance(exc, StorageError) and "copy" not in text:
            text = f"Storage: {text}"
    elif isinstance(exc, OSError):
        text = f"{exc.strerror or exc}" + (f": {exc.filename}" if getattr(exc, "filename", None) else "")
    else:
        text = f"Something went wrong ({type(exc).__name__}: {exc}). The portal's log has the details."
    return mask(text)


def mask(text: str) -> str:
    s = settings()
    for secret in s.secrets():
        text = text.replace(secret, "REDACTED")
    return redact_url(text)


def md(text: str) -> str:
    """``text`` with Markdown's special characters escaped (names and errors shown inside Markdown)."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$])", r"\\\1", str(text))


def when(value: datetime | None) -> str:
    """A UTC time as ``2026-11-22 03:14 UTC`` (or ``never``)."""
    if value is None:
        return "never"
    return value.strftime("%Y-%m-%d %H:%M UTC")


#: the one vocabulary's colours (storage.index.health): background, text
HEALTH_COLOURS = {
    "failed": ("#fde2e1", "#a4161a"),
    "never backed up": ("#ece6f7", "#4a2a8a"),
    "stale": ("#fdf1d6", "#8a5a00"),
    "unsaved": ("#e4effb", "#1c4f8a"),
    "changed": ("#e8f4e8", "#256029"),
    "ok": ("#eef6ee", "#2f6b33"),
}
ROW_PX, HEADER_PX = 35, 38  # st.dataframe's row and header height


def health_styled(frame, column: str = "status"):
    """``frame`` with its ``column`` of health words coloured (a pandas Styler st.dataframe shows)."""
    def colour(value):
        background, text = HEALTH_COLOURS.get(str(value), ("", ""))
        return f"background-color: {background}; color: {text}; font-weight: 600" if background else ""

    return frame.style.map(colour, subset=[column]) if column in frame.columns and len(frame) else frame


def table_height(rows: int, *, most: int = 200, row: int = ROW_PX) -> int:
    """A table tall enough for ``rows`` rows of ``row`` pixels (up to ``most``, then it scrolls): the page
    scrolls, not a ten-row box."""
    return HEADER_PX + row * max(1, min(rows, most)) + 2


#: Streamlit's Markdown colours of the one vocabulary (health_badge)
HEALTH_MARKDOWN = {"failed": "red", "never backed up": "violet", "stale": "orange", "unsaved": "blue",
                   "changed": "green", "ok": "green"}


def health_badge(word: str) -> str:
    """Markdown: ``word`` (the one vocabulary) as a coloured badge (Streamlit's ``:red-background[...]``)."""
    colour = HEALTH_MARKDOWN.get(word, "gray")
    return f":{colour}-background[:{colour}[**{md(word)}**]]"


def ago(value: datetime | None) -> str:
    """``value`` as an age ("3 h ago"; storage.index.health.ago)."""
    from storage.index.health import ago as _ago

    return _ago(value)


def errors_in_full(frame, *, key: str, device: str = "device", error: str = "error") -> None:
    """Below a table whose ``error`` cells are cut to the column's width: every device's error in full
    (masked), in an expander (a detail panel: "nyc-ios-01: authenti…" reads whole here)."""
    rows = [(d, e) for d, e in zip(frame[device], frame[error]) if e] if len(frame) else []
    if not rows:
        return
    with st.expander(f"Errors in full ({len(rows)})", expanded=False, key=key):
        for name, text in rows:
            st.markdown(f"**{md(name)}**: {md(mask(text))}")
