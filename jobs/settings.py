"""One settings object for every DeviceVault process.

Each value comes from, in order: an explicit argument to :meth:`Settings.load`, the ``DEVICEVAULT_*``
environment variable named beside it, then the documented default. Secrets (passwords inside URLs, keys)
print as ``REDACTED`` in ``repr``.

============================  ==============================  ===============================================
field                         environment variable             default
============================  ==============================  ===============================================
home                          DEVICEVAULT_HOME                 ``./var`` (relative to the working directory)
database_url                  DEVICEVAULT_DATABASE_URL         ``sqlite:///<home>/index.sqlite``
index_wait                    DEVICEVAULT_INDEX_WAIT           ``30`` seconds to wait for a locked index (SQLite) or
                                                               a database server that does not answer, before
                                                               the error
redis_url                     DEVICEVAULT_REDIS_URL            ``redis://127.0.0.1:6379/0``; without a password in it,
                                                               the one in ``redis_password_file`` (when that file
                                                               exists) is added: ``redis://:<password>@...``
redis_password_file           DEVICEVAULT_REDIS_PASSWORD_FILE  ``<home>/redis/password``: the password of the Redis
                                                               DeviceVault starts (``up``, ``demo``), generated once,
                                                               mode 0600 (secret; never printed)
redis_bind                    DEVICEVAULT_REDIS_BIND           ``127.0.0.1``: the address the Redis DeviceVault starts
                                                               listens on
inventory                     DEVICEVAULT_INVENTORY            ``<data>/inventories/lab`` (the lab; ``<data>``:
                                                               ``jobs.settings.DATA_DIR``)
targets                       DEVICEVAULT_TARGETS              ``git,fs`` (storage backends, comma separated)
<type>_<variable>             DEVICEVAULT_<TYPE>_<VARIABLE>    declared by each storage backend type in
                                                               ``storage/registry.py``: ``git_repo``
                                                               (DEVICEVAULT_GIT_REPO, ``<home>/git``),
                                                               ``git_branch``, ``fs_root``, ``s3_bucket``,
                                                               ``s3_prefix``, ``s3_endpoint_url``, ``s3_region``,
                                                               ``s3_access_key_id``, ``s3_secret_access_key``
                                                               (secret; prints as REDACTED)...
device_timeout                DEVICEVAULT_DEVICE_TIMEOUT       ``30`` seconds (connect and per command)
job_timeout                   DEVICEVAULT_JOB_TIMEOUT          ``900`` seconds (hard limit of one batch job)
lock_margin                   DEVICEVAULT_LOCK_MARGIN          ``60`` seconds added to the job timeout
batch_size                    DEVICEVAULT_BATCH_SIZE           ``50`` hosts per ansible-runner call
forks                         DEVICEVAULT_FORKS                ``50``: devices connected at once per batch
workers                       DEVICEVAULT_WORKERS              worker processes ``devicevault up`` and ``demo`` start (each
                                                               serves every queue): 3 per 2 CPUs, at least 2 (the fetch
                                                               mostly waits on devices; ``bench.e2e``)
fetch_processes               DEVICEVAULT_FETCH_PROCESSES      ``0`` = one process per 8 of ``forks``: processes a
                                                               batch's fetch is spread over (SSH logins within one
                                                               run one at a time; raise for far-away sites)
collector_queue               DEVICEVAULT_COLLECTOR_QUEUE      ``collector``
storage_queue                 DEVICEVAULT_STORAGE_QUEUE        ``storage`` (prefix: one queue ``storage.<type>`` per
                                                               backend type: ``storage.git``, ``storage.fs``, ...)
storage_config                DEVICEVAULT_STORAGE_CONFIG       ``<home>/storage.yml`` if that file exists, else none
                                                               (targets, locations, per-group locations; see
                                                               ``jobs/deliver/locations.py``)
encryption_keys               DEVICEVAULT_ENCRYPTION_KEYS      none; ``kid:base64key[,kid2:base64key]``, 32-byte
                                                               AES-256-GCM keys (secret; prints as REDACTED)
encryption_key_id             DEVICEVAULT_ENCRYPTION_KEY_ID    the first key id in ``encryption_keys``
retry_base                    DEVICEVAULT_RETRY_BASE           ``30`` seconds: first retry of a copy that failed
retry_max                     DEVICEVAULT_RETRY_MAX            ``3600`` seconds: longest wait between retries
retry_poll                    DEVICEVAULT_RETRY_POLL           ``5`` seconds: how often a worker looks for due copies
collect_retries               DEVICEVAULT_COLLECT_RETRIES      ``2``: extra attempts for a device that failed
                                                               transiently (timeout, connection refused/reset/lost)
                                                               and for a collection job whose worker died
collect_retry_base            DEVICEVAULT_COLLECT_RETRY_BASE   ``30`` seconds before the first retry (doubling)
max_age                       DEVICEVAULT_MAX_AGE              ``24`` hours without a successful backup before a
                                                               device is stale (per host: ``devicevault_max_age``)
retire_after                  DEVICEVAULT_RETIRE_AFTER         ``168`` hours (a week) a device may be missing from the
                                                               inventory before it is retired (hidden, history kept;
                                                               ``jobs/ops/retire.py``); 0: at the next check
result_retention_days         DEVICEVAULT_RESULT_RETENTION_DAYS ``90`` days a device result of a finished run is kept in
                                                               the index (0: forever); results that made a version
                                                               and each device's latest result and latest success
                                                               are kept always (``storage/index/retention.py``)
compliance_rules              DEVICEVAULT_COMPLIANCE_RULES     ``<home>/compliance.yml`` (no file: no rules; the format:
                                                               ``jobs/compliance/rules.py``)
users_file                    DEVICEVAULT_USERS_FILE           ``<home>/users.yml``: portal users (hashed passwords,
                                                               roles viewer / operator / admin)
portal_idle_timeout           DEVICEVAULT_PORTAL_IDLE_TIMEOUT  ``1800`` seconds without a click before a portal
                                                               session ends (0: never)
portal_search_timeout         DEVICEVAULT_PORTAL_SEARCH_TIMEOUT ``30`` seconds a portal search may take, at most
portal_login_attempts         DEVICEVAULT_PORTAL_LOGIN_ATTEMPTS ``10`` failed portal logins (per user name, and per
                                                               client address) before a lockout
portal_login_delay            DEVICEVAULT_PORTAL_LOGIN_DELAY   ``1`` second: the wait after the third failed login in
                                                               a row, doubling with each further one (at most 60)
portal_lockout                DEVICEVAULT_PORTAL_LOCKOUT       ``900`` seconds a locked-out user or client waits
portal_trusted_proxies        DEVICEVAULT_PORTAL_TRUSTED_PROXIES none: addresses of reverse proxies (comma separated)
                                                               whose ``X-Forwarded-For`` names the portal's client
log_format                    DEVICEVAULT_LOG_FORMAT           ``json`` for the long-running processes (worker,
                                                               consumer, scheduler, up); ``text`` for people
max_output_mb                 DEVICEVAULT_MAX_OUTPUT_MB        ``64`` (the fetch's own ``MAX_OUTPUT_MB``): the largest
                                                               reply to one command, in MiB; a device's timeout is
                                                               its longest silence, so this bounds a device that
                                                               never stops talking (clear error, not retried)
inventory_reuse               DEVICEVAULT_INVENTORY_REUSE      ``300`` seconds a process reuses an inventory it parsed,
                                                               while none of its files changed (0: parse every time;
                                                               a dynamic inventory is read again after this time)
notifications_file            DEVICEVAULT_NOTIFICATIONS        ``<home>/notifications.yml``: the notification rules
                                                               (channels, rules; see ``jobs/notify/rules.py``);
                                                               no file: nothing is sent
vault_password_file           DEVICEVAULT_VAULT_PASSWORD_FILE  Ansible's own ``ANSIBLE_VAULT_PASSWORD_FILE``, then
                                                               ``ANSIBLE_VAULT_IDENTITY_LIST``; else none. The file
                                                               (or executable script) holding the password of
                                                               vaulted inventory files and inline ``!vault`` values;
                                                               several, comma separated, as ``--vault-id``
                                                               ``label@path``. Every process reading the inventory
                                                               and the fetch's ansible-playbook use it
============================  ==============================  ===============================================

Per-target options for the targets named after a backend type (``git``, ``fs``, ``s3``: the built-in
targets when there is no storage file, or to override the file): ``DEVICEVAULT_<FS|GIT|S3>_COMPRESSION``
(``gzip``, ``zstd``, ``none``), ``DEVICEVAULT_<...>_ENCRYPT`` (``true``/``false``), ``DEVICEVAULT_<...>_KEEP_LAST``
and ``DEVICEVAULT_<...>_KEEP_DAYS`` (retention).
"""

from __future__ import annotations

import dataclasses
import os
import re
from urllib.parse import quote
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage.registry import BackendType, Setting, backend_type, backend_types

from jobs.errors import BackupError

# Where DeviceVault's files live. This is the one place that decides it; everything else asks here.
#: the directory holding the Python packages (cli/, jobs/, portal/, ...): the checkout, or site-packages
SOURCE_ROOT = Path(__file__).resolve().parent.parent
#: where ``pip install .`` (non-editable) puts ansible.cfg, playbooks/ and inventories/, laid out as in the
#: checkout so that ansible.cfg's relative paths hold (``setup.py`` copies them into the wheel)
INSTALLED_DATA = Path(__file__).resolve().parent / "share"
#: the data directory: ansible.cfg, playbooks/ (backup.yml, platforms/, the devicevault.network
#: collection) and inventories/lab; the checkout itself when running from a source tree or an editable install
DATA_DIR = INSTALLED_DATA if (INSTALLED_DATA / "ansible.cfg").is_file() else SOURCE_ROOT
PLAYBOOKS_DIR = DATA_DIR / "playbooks"
#: DeviceVault's Ansible collection (``devicevault.network``: plugins, platform files and their loader)
COLLECTIONS_DIR = PLAYBOOKS_DIR / "collections"
ANSIBLE_CFG = DATA_DIR / "ansible.cfg"
#: the simulated lab's inventory: the default ``DEVICEVAULT_INVENTORY`` (and ``python -m lab up``'s)
LAB_INVENTORY = DATA_DIR / "inventories" / "lab"
#: the Streamlit portal's entry point (``devicevault portal``, ``up``, ``demo``)
PORTAL_APP = SOURCE_ROOT / "portal" / "app.py"

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z0-9+.-]+://)(?P<user>[^:/@]*):(?P<pw>[^@/]*)@", re.I)


def redact_url(url: str) -> str:
    """``redis://:secret@host`` -> ``redis://:REDACTED@host``."""
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:REDACTED@", url)


_TARGET_ENV = re.compile(r"\ADEVICEVAULT_[A-Z0-9_]+?_(COMPRESSION|ENCRYPT|KEEP_LAST|KEEP_DAYS)\Z")
SECRET_FIELDS = ("encryption_keys",)  # and every backend setting declared secret (storage/registry.py)


def parse_flag(value: Any) -> bool | None:
    """A yes/no value from a file or variable: a bool, true/yes/on/1 or false/no/off/0 (any case), or empty
    for no; None when it is none of these (the caller names the file and the key)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    return None


def _storage_config(value: Any, home: Path) -> Path | None:
    if value:
        return Path(value).absolute()
    default = home / "storage.yml"
    return default if default.is_file() else None


def _backend_value(setting: Setting, value: Any) -> Any:
    return Path(value).absolute() if setting.path and value not in (None, "") else value


def _defaults(kind: BackendType, home: Path) -> dict[str, Any]:
    return {kind.attribute(s): _backend_value(s, s.default_for(home)) for s in kind.settings}


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


class SettingsError(BackupError, ValueError):
    """A setting has a value DeviceVault cannot use; the message names the variable and the value."""

    kind = "settings"


#: where a vault password comes from, named in messages about it
VAULT_SETTING = "DEVICEVAULT_VAULT_PASSWORD_FILE / ANSIBLE_VAULT_PASSWORD_FILE"


def _parse_vault_ids(value: str) -> list[tuple[str, Path]]:
    found = []
    for part in _split(value):
        label, _, path = part.partition("@") if "@" in part else ("", "", part)
        if path in ("prompt", "prompt_ask_vault_pass"):
            raise SettingsError(f"{VAULT_SETTING}={value!r}: DeviceVault's processes cannot prompt for a vault "
                                "password; name a password file (or an executable script printing it)")
        found.append((label.strip() or "default", Path(path.strip()).expanduser().absolute()))
    return found


def _vault_password_file(value: Any) -> str | None:
    """The vault setting with absolute paths (checked here; a missing file is reported by the inventory reader,
    which names the inventory too)."""
    ids = _parse_vault_ids(str(value or ""))
    return ",".join(str(path) if label == "default" else f"{label}@{path}" for label, path in ids) or None


def _number(kind: type, name: str, value: Any, *, least: float | None = None, above: float | None = None,
            what: str = "") -> Any:
    """``int(value)`` or ``float(value)``, at least ``least`` or more than ``above`` when given; a value that
    is not one names its variable and says what it must be (``what``: e.g. "a number of seconds, 0 or more")."""
    try:
        number = kind(str(value).strip())
    except ValueError:
        number = None
    if number is None or (least is not None and not number >= least) or (above is not None and not number > above):
        what = what or ("a whole number" if kind is int else "a number")
        raise SettingsError(f"DEVICEVAULT_{name.upper()}={value!r}: must be {what}")
    return number


def _redis_url(url: str) -> str:
    if not re.match(r"(rediss?|unix)://", url, re.I):
        raise SettingsError(f"DEVICEVAULT_REDIS_URL={redact_url(url)!r}: must start with redis://, rediss:// or "
                            "unix:// (e.g. redis://127.0.0.1:6379/0)")
    return url


def _with_password(url: str, password_file: Path) -> str:
    """``url`` with the password of ``password_file`` when it names none and the file exists (the Redis that
    ``devicevault up``/``demo`` started); ``redis://`` and ``rediss://`` URLs only."""
    m = re.match(r"(?P<scheme>rediss?://)(?P<rest>.*)\Z", url, re.I | re.S)
    if m is None or "@" in m["rest"].split("/", 1)[0]:
        return url
    try:
        password = password_file.read_text().strip()
    except OSError:
        return url
    return f"{m['scheme']}:{quote(password, safe='')}@{m['rest']}" if password else url


def _at_least(minimum: int, name: str, value: Any) -> int:
    """A whole number >= ``minimum``: hosts per batch and forks need 1 (0 would enqueue empty jobs, a negative
    one nothing); 0 fetch processes means "decided by the fetch"."""
    return _number(int, name, value, least=minimum, what=f"a whole number of at least {minimum}")


def _seconds(name: str, value: Any, unit: str = "seconds") -> float:
    """A number of seconds (or of ``unit``), 0 or more."""
    return _number(float, name, value, least=0, what=f"a number of {unit}, 0 or more")


def _megabytes(name: str, value: Any) -> float | None:
    """A size in MiB, more than 0; None stays None (the default of whoever uses it)."""
    return None if value is None else _number(float, name, value, above=0, what="a number of MiB, more than 0")


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    redis_url: str
    inventory: Path
    targets: tuple[str, ...]
    device_timeout: int
    job_timeout: int
    lock_margin: int
    batch_size: int
    forks: int
    collector_queue: str
    storage_queue: str
    storage_config: Path | None = None
    #: the storage backends' settings, ``(attribute, value)`` pairs such as ``("git_repo", Path(...))``, as the
    #: registered backend types declare them; read them as attributes: ``settings.git_repo``
    backend_settings: tuple[tuple[str, Any], ...] = ()
    encryption_keys: str | None = None
    encryption_key_id: str | None = None
    retry_base: float = 30.0
    retry_max: float = 3600.0
    retry_poll: float = 5.0
    collect_retries: int = 2
    collect_retry_base: float = 30.0
    max_age: float = 24.0
    retire_after: float = 168.0
    result_retention_days: float = 90.0
    compliance_rules: Path | None = None
    log_format: str = "json"
    users_file: Path | None = None
    portal_idle_timeout: float = 1800.0
    portal_search_timeout: float = 30.0
    portal_login_attempts: int = 10
    portal_login_delay: float = 1.0
    portal_lockout: float = 900.0
    portal_trusted_proxies: tuple[str, ...] = ()
    fetch_processes: int = 0
    workers: int = 2
    redis_password_file: Path | None = None
    redis_bind: str = "127.0.0.1"
    index_wait: float = 30.0
    inventory_reuse: float = 300.0
    #: MiB; None: the fetch's own default (the collection's ``batch_fetch.MAX_OUTPUT_MB``)
    max_output_mb: float | None = None
    #: vault password files, ``[label@]path`` comma separated (absolute paths; see :meth:`vault_ids`)
    vault_password_file: str | None = None
    notifications_file: Path | None = None
    target_env: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def lock_ttl(self) -> int:
        """A host lock lives as long as the job may run plus a safety margin."""
        return self.job_timeout + self.lock_margin

    @classmethod
    def load(cls, env: dict[str, str] | None = None, **explicit: Any) -> "Settings":
        env = dict(os.environ if env is None else env)

        def pick(name: str, default: Any) -> Any:
            if explicit.get(name) is not None:
                return explicit[name]
            value = env.get(f"DEVICEVAULT_{name.upper()}")
            return default if value in (None, "") else value

        home = Path(pick("home", Path.cwd() / "var")).absolute()
        redis_password_file = Path(pick("redis_password_file", home / "redis" / "password")).absolute()
        targets = pick("targets", "git,fs")
        return cls(
            home=home,
            database_url=str(pick("database_url", f"sqlite:///{home / 'index.sqlite'}")),
            redis_url=_with_password(_redis_url(str(pick("redis_url", "redis://127.0.0.1:6379/0"))),
                                     redis_password_file),
            inventory=Path(pick("inventory", LAB_INVENTORY)).absolute(),
            targets=tuple(_split(targets) if isinstance(targets, str) else targets),
            device_timeout=_number(int, "device_timeout", pick("device_timeout", 30)),
            job_timeout=_number(int, "job_timeout", pick("job_timeout", 900)),
            lock_margin=_number(int, "lock_margin", pick("lock_margin", 60)),
            batch_size=_at_least(1, "batch_size", pick("batch_size", 50)),
            forks=_at_least(1, "forks", pick("forks", 50)),
            fetch_processes=_at_least(0, "fetch_processes", pick("fetch_processes", 0)),
            workers=_at_least(1, "workers", pick("workers", max(2, (os.cpu_count() or 2) * 3 // 2))),
            redis_password_file=redis_password_file,
            redis_bind=str(pick("redis_bind", "127.0.0.1")),
            index_wait=_number(float, "index_wait", pick("index_wait", 30.0)),
            collector_queue=str(pick("collector_queue", "collector")),
            storage_queue=str(pick("storage_queue", "storage")),
            storage_config=_storage_config(pick("storage_config", None), home),
            backend_settings=tuple(
                (kind.attribute(s), _backend_value(s, pick(kind.attribute(s), s.default_for(home))))
                for kind in backend_types() for s in kind.settings),
            encryption_keys=pick("encryption_keys", None),
            encryption_key_id=pick("encryption_key_id", None),
            retry_base=_number(float, "retry_base", pick("retry_base", 30.0)),
            retry_max=_number(float, "retry_max", pick("retry_max", 3600.0)),
            retry_poll=_number(float, "retry_poll", pick("retry_poll", 5.0)),
            collect_retries=_number(int, "collect_retries", pick("collect_retries", 2)),
            collect_retry_base=_number(float, "collect_retry_base", pick("collect_retry_base", 30.0)),
            max_age=_number(float, "max_age", pick("max_age", 24.0)),
            retire_after=_seconds("retire_after", pick("retire_after", 168.0), "hours"),
            result_retention_days=_seconds("result_retention_days", pick("result_retention_days", 90.0), "days"),
            compliance_rules=Path(pick("compliance_rules", home / "compliance.yml")).absolute(),
            log_format=str(pick("log_format", "json")),
            users_file=Path(pick("users_file", home / "users.yml")).absolute(),
            portal_idle_timeout=_seconds("portal_idle_timeout", pick("portal_idle_timeout", 1800.0)),
            portal_search_timeout=_seconds("portal_search_timeout", pick("portal_search_timeout", 30.0)),
            portal_login_attempts=_at_least(1, "portal_login_attempts", pick("portal_login_attempts", 10)),
            portal_login_delay=_seconds("portal_login_delay", pick("portal_login_delay", 1.0)),
            portal_lockout=_seconds("portal_lockout", pick("portal_lockout", 900.0)),
            portal_trusted_proxies=tuple(_split(str(pick("portal_trusted_proxies", "")))),
            inventory_reuse=_seconds("inventory_reuse", pick("inventory_reuse", 300.0)),
            max_output_mb=_megabytes("max_output_mb", pick("max_output_mb", None)),
            vault_password_file=_vault_password_file(
                pick("vault_password_file", None)
                or ",".join(v for v in (env.get("ANSIBLE_VAULT_IDENTITY_LIST"), env.get("ANSIBLE_VAULT_PASSWORD_FILE")) if v)),
            notifications_file=Path(pick("notifications", home / "notifications.yml")).absolute(),
            target_env={k: v for k, v in env.items() if _TARGET_ENV.match(k) and v != ""},
        )

    def __getattr__(self, name: str) -> Any:
        """A backend setting by its attribute name (``git_repo``, ``fs_root``, ``s3_bucket``...)."""
        if not name.startswith("_") and name != "backend_settings":
            for attribute, value in self.backend_settings:
                if attribute == name:
                    return value
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def backend_options(self, kind: str) -> dict[str, Any]:
        """Constructor options of a ``kind`` target from these settings (what the backend type declares, with
        its defaults if it was registered after these settings were loaded)."""
        spec = backend_type(kind)
        return spec.options(_defaults(spec, self.home) | dict(self.backend_settings))

    def collector_queue_for(self, collector_group: str = "") -> str:
        """``collector`` for devices without a collection group, ``collector.group.<name>`` for the others."""
        return f"{self.collector_queue}.group.{collector_group}" if collector_group else self.collector_queue

    def secrets(self) -> list[str]:
        """Secret values held by the settings (to mask them in logs)."""
        secret = {kind.attribute(s) for kind in backend_types() for s in kind.settings if s.secret}
        values = [str(value or "") for attribute, value in self.backend_settings if attribute in secret]
        for part in (self.encryption_keys or "").split(","):
            values.append(part.partition(":")[2].strip())
        for url in (self.database_url, self.redis_url):
            m = _URL_PASSWORD.search(url)
            if m:
                values.append(m["pw"])
        return [v for v in values if len(v) >= 4]

    def vault_ids(self) -> list[tuple[str, Path]]:
        """The vault password files as Ansible's ``--vault-id`` pairs ``(label, path)``; the label is
        ``default`` where none was given (Ansible's own default vault identity)."""
        return _parse_vault_ids(self.vault_password_file or "")

    def storage_queue_for(self, backend_type: str) -> str:
        """The queue that workers with access to ``backend_type`` targets serve: ``storage.git`` etc."""
        return f"{self.storage_queue}.{backend_type}"

    def __repr__(self) -> str:
        secret = set(SECRET_FIELDS) | {kind.attribute(s) for kind in backend_types() for s in kind.settings if s.secret}
        parts = []
        for f in dataclasses.fields(self):
            if f.name == "target_env":
                continue
            pairs = self.backend_settings if f.name == "backend_settings" else [(f.name, getattr(self, f.name))]
            for name, value in pairs:
                if name in ("database_url", "redis_url"):
                    value = redact_url(value)
                elif name in secret and value:
                    value = "REDACTED"
                parts.append(f"{name}={value!r}")
        return f"Settings({', '.join(parts)})"

    __str__ = __repr__
