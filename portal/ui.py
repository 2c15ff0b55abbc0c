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

from .users import User, UsersError, UsersFile

log = logging.getLogger("devicevault.portal")

USER_KEY = "portal_user"
_lock = threading.Lock()
_layouts: dict[tuple, object] = {}
_users_files: dict[str, UsersFile] = {}
_inventories: dict[str, tuple[float, dict]] = {}


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


# --- the user ---------------------------------------------------------------------------------------------
def current_user() -> User | None:
    """The logged-in user, checked against the users file on every run (a removed user is logged out, a
    changed role applies at once)."""
    name = st.session_state.get(USER_KEY)
    if not name:
        return None
    try:
        user = users_file().get(name)
    except UsersError:
        user = None
    if user is None:
        st.session_state.pop(USER_KEY, None)
    return user


def login_page() -> None:
    """The only thing shown before login."""
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
    with st.form("login_form"):
        st.subheader("Log in")
        name = st.text_input("User name", key="login_username")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted:
        user = users_file().authenticate(name, password)
        if user is None:
            log.warning("portal: failed login for %r", name)
            time.sleep(0.5)  # slows down guessing
            st.error("Wrong user name or password.")
            return
        log.info("portal: %s logged in (%s)", user.name, user.role)
        st.session_state[USER_KEY] = user.name
        st.session_state.pop("login_password", None)
        st.rerun()


def logout() -> None:
    for key in list(st.session_state.keys()):
        del st.session_state[key]


def sidebar(user: User) -> None:
    with st.sidebar:
        st.caption(f"Logged in as **{md(user.name)}** ({user.role})")
        st.button("Log out", key="logout", on_click=logout)


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
