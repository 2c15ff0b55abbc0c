"""Portal users: a YAML file of user names, roles and bcrypt password hashes (no Streamlit here).

The file is ``DEVICEVAULT_USERS_FILE`` (default ``$DEVICEVAULT_HOME/users.yml``) and is managed with
``devicevault users add|list|remove`` or by an admin on the portal's Users page::

    # DeviceVault portal users (devicevault users add NAME --role viewer|operator|admin)
    users:
      alice:
        role: admin
        password: "$2b$12$Jq0...."       # bcrypt hash; the password itself is never stored
      noc:
        role: viewer
        password: "$2b$12$7dH...."

Roles, each one including the one before it:

* ``viewer``: every page, read only (devices, versions, diffs, search, run history, health);
* ``operator``: also starts backups on the Runs page;
* ``admin``: also manages the portal's users (Users page).

The file is written atomically with mode 0600. Hashes are bcrypt (cost 12 by default); bcrypt reads at
most 72 bytes, so longer passwords are refused rather than silently cut.
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import yaml

ROLES = ("viewer", "operator", "admin")
MIN_PASSWORD = 8
MAX_PASSWORD_BYTES = 72
_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._@-]{0,63}\Z")
HEADER = "# DeviceVault portal users (devicevault users add NAME --role viewer|operator|admin)\n"


class UsersError(ValueError):
    """A bad user name, role or password, or an unreadable users file (the message says which)."""


@dataclass(frozen=True)
class User:
    name: str
    role: str

    def can(self, role: str) -> bool:
        """Whether this user has ``role`` or a higher one."""
        return ROLES.index(self.role) >= ROLES.index(role)

    @property
    def can_trigger(self) -> bool:
        return self.can("operator")

    @property
    def is_admin(self) -> bool:
        return self.can("admin")


def check_role(role: str) -> str:
    role = str(role or "").strip().lower()
    if role not in ROLES:
        raise UsersError(f"unknown role {role!r}: use {', '.join(ROLES)}")
    return role


def check_name(name: str) -> str:
    name = str(name or "").strip()
    if not _NAME.match(name):
        raise UsersError(f"invalid user name {name!r}: 1-64 letters, digits, '.', '_', '@' or '-'")
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UsersError(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise UsersError(f"the password must be at most {MAX_PASSWORD_BYTES} bytes (a bcrypt limit)")
    return password


def hash_password(password: str, rounds: int = 12) -> str:
    return bcrypt.hashpw(check_password(password).encode("utf-8"), bcrypt.gensalt(rounds)).decode("ascii")


def _verify(password: str, hashed: str) -> bool:
    try:
        data = password.encode("utf-8")
        if len(data) > MAX_PASSWORD_BYTES:
            return False
        return bcrypt.checkpw(data, hashed.encode("ascii"))
    except (ValueError, TypeError):  # not a bcrypt hash
        return False


@functools.cache
def _dummy_hash(rounds: int) -> str:
    """A hash to check against when the user does not exist, so both cases take as long."""
    return bcrypt.hashpw(b"devicevault-no-such-user", bcrypt.gensalt(rounds)).decode("ascii")


def _rounds(hashed: str) -> int:
    try:
        return int(hashed.split("$")[2])
    except (IndexError, ValueError):
        return 12


class UsersFile:
    """The users file at ``path``: read on demand (re-read when it changes on disk), written atomically."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._cache: tuple[tuple[int, int] | None, dict[str, dict]] = (None, {})

    # --- reading ----------------------------------------------------------------------------------------
    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UsersError(f"users file {self.path}: cannot read: {exc.strerror or exc}") from None
        return (st.st_mtime_ns, st.st_size)

    def _records(self) -> dict[str, dict]:
        with self._lock:
            stamp = self._stamp()
            if stamp is not None and stamp == self._cache[0]:
                return self._cache[1]
            records = self._parse() if stamp is not None else {}
            self._cache = (stamp, records)
            return records

    def _parse(self) -> dict[str, dict]:
        try:
            data = yaml.safe_load(self.path.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise UsersError(f"users file {self.path}: cannot read: {exc.strerror or exc}") from None
        except yaml.YAMLError:
            raise UsersError(f"users file {self.path}: not valid YAML") from None
        users = data.get("users") if isinstance(data, dict) else None
        if users is None:
            users = {}
        if not isinstance(users, dict):
            raise UsersError(f"users file {self.path}: 'users' must map user names to role and password")
        records = {}
        for name, spec in users.items():
            if not isinstance(spec, dict) or not spec.get("password"):
                raise UsersError(f"users file {self.path}: user {name!r} needs a role and a password hash")
            try:
                role = check_role(spec.get("role", "viewer"))
            except UsersError as exc:
                raise UsersError(f"users file {self.path}: user {name!r}: {exc}") from None
            records[str(name)] = {"role": role, "password": str(spec["password"])}
        return records

    def users(self) -> list[User]:
        return [User(name, r["role"]) for name, r in sorted(self._records().items())]

    def get(self, name: str) -> User | None:
        record = self._records().get(name)
        return User(name, record["role"]) if record else None

    def authenticate(self, name: str, password: str) -> User | None:
        """The user when ``password`` is right, else None (the same work either way)."""
        records = self._records()
        record = records.get(str(name or "").strip())
        if record is None:  # same cost as a real check (the cost of the file's first hash)
            some = next(iter(records.values()), None)
            _verify(password or "", _dummy_hash(_rounds(some["password"]) if some else 12))
            return None
        ok = _verify(password or "", record["password"])
        return User(str(name).strip(), record["role"]) if ok else None

    # --- writing ----------------------------------------------------------------------------------------
    def _write(self, records: dict[str, dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = yaml.safe_dump(
            {"users": {n: {"role": r["role"], "password": r["password"]} for n, r in sorted(records.items())}},
            sort_keys=False, default_flow_style=False,
        )
        fd, tmp = tempfile.mkstemp(prefix=".users.", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(HEADER + body)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        with self._lock:
            self._cache = (None, {})

    def add(self, name: str, role: str, password: str, *, replace: bool = False, rounds: int = 12) -> User:
        name, role = check_name(name), check_role(role)
        records = dict(self._records())
        if name in records and not replace:
            raise UsersError(f"user {name!r} exists already (use --replace to set a new password and role)")
        if name in records and records[name]["role"] == "admin" and role != "admin":
            self._keep_an_admin(records, name)
        records[name] = {"role": role, "password": hash_password(password, rounds)}
        self._write(records)
        return User(name, role)

    def set_role(self, name: str, role: str) -> User:
        role = check_role(role)
        records = dict(self._records())
        if name not in records:
            raise UsersError(f"no user {name!r}")
        if records[name]["role"] == "admin" and role != "admin":
            self._keep_an_admin(records, name)
        records[name] = dict(records[name], role=role)
        self._write(records)
        return User(name, role)

    def set_password(self, name: str, password: str, *, rounds: int = 12) -> None:
        records = dict(self._records())
        if name not in records:
            raise UsersError(f"no user {name!r}")
        records[name] = dict(records[name], password=hash_password(password, rounds))
        self._write(records)

    def remove(self, name: str) -> None:
        records = dict(self._records())
        if name not in records:
            raise UsersError(f"no user {name!r}")
        if records[name]["role"] == "admin":
            self._keep_an_admin(records, name)
        del records[name]
        self._write(records)

    def _keep_an_admin(self, records: dict[str, dict], name: str) -> None:
        if not any(r["role"] == "admin" for n, r in records.items() if n != name):
            raise UsersError(f"{name!r} is the last admin; make another user admin first")
