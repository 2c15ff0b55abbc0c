"""``devicevault portal`` (the Streamlit portal) and ``devicevault users`` (who may log in to it).

The portal is ``streamlit run portal/asgi.py`` (``portal/app.py`` as Streamlit's ``st.App``, with the routes of the
session cookie: ``portal/sessions.py``) with the flags it needs on a server: headless, no usage
statistics, no file watcher, no error details in the browser (the portal shows readable messages itself).
Users live in ``DEVICEVAULT_USERS_FILE`` (default ``$DEVICEVAULT_HOME/users.yml``); see ``portal/users.py``.
"""

from __future__ import annotations

import os
import sys

import click

from jobs.settings import PORTAL_APP, Settings

from .common import Fail, emit

APP = PORTAL_APP  # jobs.settings decides where the files are (a checkout or an installed package)
ASGI_APP = APP.parent / "asgi.py"  # app.py with the session cookie's routes (portal.sessions)


#: where the portal listens unless told otherwise: this machine only (Streamlit speaks plain HTTP; open it to
#: others with --address, behind a TLS reverse proxy)
DEFAULT_ADDRESS = "127.0.0.1"


def streamlit_command(port: int, address: str | None = DEFAULT_ADDRESS) -> list[str]:
    """The command line that serves the portal on ``port`` at ``address`` (loopback by default; ``0.0.0.0``
    for every interface)."""
    args = [
        sys.executable, "-m", "streamlit", "run", str(ASGI_APP),
        "--server.port", str(port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
        "--client.showErrorDetails", "none",
        "--client.toolbarMode", "minimal",
    ]
    args += ["--server.address", address or DEFAULT_ADDRESS]
    return args


@click.command()
@click.option("--port", default=8501, show_default=True, help="HTTP port.")
@click.option("--address", default=DEFAULT_ADDRESS, show_default=True,
              help="Address to listen on (0.0.0.0: every interface; put a TLS reverse proxy in front).")
def portal(port: int, address: str) -> None:
    """Serve the web portal (Streamlit). Log in with a user from `devicevault users add`."""
    settings = Settings.load()
    users_path = settings.users_file or settings.home / "users.yml"
    from portal.users import UsersError, UsersFile

    try:
        if not UsersFile(users_path).users():
            click.echo(f"note: no portal user in {users_path} yet; create one with "
                       "`devicevault users add NAME --role admin`", err=True)
    except UsersError as exc:
        raise Fail(str(exc)) from exc
    os.environ.setdefault("LC_ALL", "C.UTF-8")
    command = streamlit_command(port, address)
    os.execv(command[0], command)


@click.group()
def users() -> None:
    """Portal users: names, roles (viewer, operator, admin) and bcrypt-hashed passwords."""


def _file():
    from portal.users import UsersFile

    settings = Settings.load()
    return UsersFile(settings.users_file or settings.home / "users.yml")


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["viewer", "operator", "admin"]), required=True,
              help="viewer: read only; operator: also starts backups; admin: also manages users.")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
@click.option("--replace", is_flag=True, help="Set a new password and role for an existing user.")
def users_add(name: str, role: str, password_stdin: bool, replace: bool) -> None:
    """Add a user (asks for the password twice unless --password-stdin)."""
    from portal.users import UsersError

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    users_file = _file()
    try:
        user = users_file.add(name, role, password, replace=replace)
    except UsersError as exc:
        raise Fail(str(exc)) from exc
    click.echo(f"user {user.name} ({user.role}) saved in {users_file.path}")


@users.command("list")
@click.option("--json", "as_json", is_flag=True)
def users_list(as_json: bool) -> None:
    """Every portal user and role (never the password hashes)."""
    from portal.users import UsersError

    try:
        rows = [{"name": u.name, "role": u.role} for u in _file().users()]
    except UsersError as exc:
        raise Fail(str(exc)) from exc
    emit(rows, ["name", "role"], as_json)


@users.command("remove")
@click.argument("name")
def users_remove(name: str) -> None:
    """Remove a user (never the last admin)."""
    from portal.users import UsersError

    try:
        _file().remove(name)
    except UsersError as exc:
        raise Fail(str(exc)) from exc
    click.echo(f"user {name} removed")
