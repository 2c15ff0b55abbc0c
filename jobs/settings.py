"""One settings object for every DeviceVault process.

Each value comes from, in order: an explicit argument to :meth:`Settings.load`, the ``DEVICEVAULT_*``
environment variable named beside it, then the documented default. Secrets (passwords inside URLs, keys)
print as ``REDACTED`` in ``repr``.

============================  ==============================  ===============================================
field                         environment variable             default
============================  ==============================  ===============================================
home                          DEVICEVAULT_HOME                 ``./var`` (relative to the working directory)
database_url                  DEVICEVAULT_DATABASE_URL         ``sqlite:///<home>/index.sqlite``
redis_url                     DEVICEVAULT_REDIS_URL            ``redis://127.0.0.1:6379/0``
inventory                     DEVICEVAULT_INVENTORY            ``<project>/inventories/lab``
targets                       DEVICEVAULT_TARGETS              ``git,fs`` (storage backends, comma separated)
git_repo                      DEVICEVAULT_GIT_REPO             ``<home>/git``
git_branch                    DEVICEVAULT_GIT_BRANCH           ``main``
fs_root                       DEVICEVAULT_FS_ROOT              ``<home>/fs``
device_timeout                DEVICEVAULT_DEVICE_TIMEOUT       ``30`` seconds (connect and per command)
job_timeout                   DEVICEVAULT_JOB_TIMEOUT          ``900`` seconds (hard limit of one batch job)
lock_margin                   DEVICEVAULT_LOCK_MARGIN          ``60`` seconds added to the job timeout
batch_size                    DEVICEVAULT_BATCH_SIZE           ``50`` hosts per ansible-runner call
forks                         DEVICEVAULT_FORKS                ``50``
collector_queue               DEVICEVAULT_COLLECTOR_QUEUE      ``collector``
storage_queue                 DEVICEVAULT_STORAGE_QUEUE        ``storage``
============================  ==============================  ===============================================
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PLAYBOOKS_DIR = PROJECT_ROOT / "playbooks"
PLATFORMS_DIR = PLAYBOOKS_DIR / "platforms"
ANSIBLE_CFG = PROJECT_ROOT / "ansible.cfg"

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z0-9+.-]+://)(?P<user>[^:/@]*):(?P<pw>[^@/]*)@", re.I)


def redact_url(url: str) -> str:
    """``redis://:secret@host`` -> ``redis://:REDACTED@host``."""
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:REDACTED@", url)


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    redis_url: str
    inventory: Path
    targets: tuple[str, ...]
    git_repo: Path
    git_branch: str
    fs_root: Path
    device_timeout: int
    job_timeout: int
    lock_margin: int
    batch_size: int
    forks: int
    collector_queue: str
    storage_queue: str
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

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
        targets = pick("targets", "git,fs")
        return cls(
            home=home,
            database_url=str(pick("database_url", f"sqlite:///{home / 'index.sqlite'}")),
            redis_url=str(pick("redis_url", "redis://127.0.0.1:6379/0")),
            inventory=Path(pick("inventory", PROJECT_ROOT / "inventories" / "lab")).absolute(),
            targets=tuple(_split(targets) if isinstance(targets, str) else targets),
            git_repo=Path(pick("git_repo", home / "git")).absolute(),
            git_branch=str(pick("git_branch", "main")),
            fs_root=Path(pick("fs_root", home / "fs")).absolute(),
            device_timeout=int(pick("device_timeout", 30)),
            job_timeout=int(pick("job_timeout", 900)),
            lock_margin=int(pick("lock_margin", 60)),
            batch_size=int(pick("batch_size", 50)),
            forks=int(pick("forks", 50)),
            collector_queue=str(pick("collector_queue", "collector")),
            storage_queue=str(pick("storage_queue", "storage")),
        )

    def backend_options(self, name: str) -> dict[str, Any]:
        """Constructor options for a storage backend named in ``targets``."""
        if name == "git":
            return {"repo_path": str(self.git_repo), "branch": self.git_branch}
        if name == "fs":
            return {"root": str(self.fs_root)}
        return dict(self.extra.get(name, {}))

    def __repr__(self) -> str:
        parts = []
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if f.name in ("database_url", "redis_url"):
                value = redact_url(value)
            parts.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(parts)})"

    __str__ = __repr__
