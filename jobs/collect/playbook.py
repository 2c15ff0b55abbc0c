"""A plain ``ansible-playbook`` / ``ansible-runner`` / AWX run of ``playbooks/backup.yml`` as a DeviceVault run.

The ``devicevault.network.devicevault`` callback of DeviceVault's collection (``plugins/callback/
devicevault.py``, which has the design) runs inside ``ansible-playbook`` and calls this module, which does
what a ``devicevault backup`` does around the fetch, through the same functions:

- :meth:`PlaybookRun.begin` (the collect task starts): the run's start on ``device:results`` (its source:
  the user and control host, or AWX's job id, template and launching user), the host locks
  (:func:`jobs.collect.locks.host_locks`) and :func:`jobs.collect.collector.plan_batch`. It says which
  hosts the task must not fetch: ``skip`` (locked by another backup: ``skipped_locked``) and ``fail`` (one
  line each: DeviceVault's Redis cannot be reached, the host cannot be backed up by DeviceVault);
- :meth:`PlaybookRun.end` (the collect task is over): the task's results file read as
  :func:`jobs.collect.fetch.fetch_configs` reads its own (:func:`jobs.collect.fetch.apply_record`), then
  :func:`jobs.collect.collector.finish_batch`, the one post-fetch path (normalise, mask, version cache,
  outbox, results), and the locks released.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from jobs import errors
from jobs.collect.collector import Batch, finish_batch, plan_batch
from jobs.collect.fetch import FetchOutcome, apply_record
from jobs.collect.inventory import inventory_text, load_inventory
from jobs.collect.locks import host_locks
from jobs.deliver.locations import StorageConfigError, StorageLayout
from jobs.settings import Settings, redact_url
from jobs.streams.results import DEVICE_RESULTS_STREAM, DeviceResult, DeviceStatus, RunStarted, run_task_id, utcnow

log = logging.getLogger(__name__)

#: the extra variables AWX (and Tower, as ``tower_*``) passes to every job
AWX_VARS = ("job_id", "job_template_name", "user_name")


def run_source(extra_vars: dict) -> str:
    """Where a playbook run comes from, for the run's ``requested_by``: ``awx job 42 (Backup) by alice`` from
    the variables AWX passes (``awx_job_id``, ``awx_job_template_name``, ``awx_user_name`` or their
    ``tower_*`` twins), else ``ansible-playbook user@control-host``."""
    found = {}
    for name in AWX_VARS:
        value = extra_vars.get(f"awx_{name}", extra_vars.get(f"tower_{name}"))
        if value not in (None, ""):
            found[name] = str(value)
    if "job_id" in found:
        text = f"awx job {found['job_id']}"
        if "job_template_name" in found:
            text += f" ({found['job_template_name']})"
        if "user_name" in found:
            text += f" by {found['user_name']}"
        return text[:255]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"ansible-playbook {user}@{socket.gethostname()}"[:255]


@dataclass
class PlaybookRun:
    """One DeviceVault run for one ``ansible-playbook`` process (one per collect task that starts)."""

    settings: Settings
    #: the playbook's inventory: every ``-i`` source (a list, or :func:`~jobs.collect.inventory.inventory_text`)
    inventory: Path | str | list
    source: str
    selector: str
    #: the playbook's own vault secrets (``(vault id, secret)``: ``--vault-id``, ``--ask-vault-pass``,
    #: ``--vault-password-file``), tried with the settings' to read the inventory as the playbook read it
    vault_secrets: list = field(default_factory=list, repr=False)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    redis: Redis | None = None
    batch: Batch | None = None
    hosts: list[str] = field(default_factory=list)
    _locks: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def __post_init__(self) -> None:
        self.inventory = Path(inventory_text(self.inventory))  # how the run and its results name it

    def begin(self, hosts: list[str]) -> dict[str, dict[str, str]]:
        """Start the run for ``hosts`` (the collect task's): ``{"skip": {host: why}, "fail": {host: why}}``
        for the hosts the task must not fetch (every host fails, each with one line, when DeviceVault's
        Redis cannot be reached or the inventory cannot be read)."""
        self.hosts = list(dict.fromkeys(hosts))
        redis = Redis.from_url(self.settings.redis_url, socket_connect_timeout=10, socket_timeout=30)
        try:
            redis.ping()
        except RedisError as exc:
            return self._fail_all(f"DeviceVault's Redis at {redact_url(self.settings.redis_url)} cannot be reached ({exc})")
        try:
            with _playbook_vault_kept():
                inv = load_inventory(self.inventory, self.settings, only=self.hosts, vault_secrets=self.vault_secrets)
            layout = StorageLayout.load(self.settings)
        except (errors.InventoryError, StorageConfigError) as exc:
            return self._fail_all(str(exc))
        self.redis = redis
        try:
            locked, busy = self._locks.enter_context(
                host_locks(redis, self.hosts, self.settings.lock_ttl, owner=f"playbook:{self.run_id}"))
            self.batch = plan_batch(self.settings, self.run_id, self.inventory, inv, locked, busy, layout)
            targets: dict[str, None] = {}
            for name in self.batch.runnable:
                targets.update(dict.fromkeys(layout.targets_for(inv[name].group, inv[name].location)))
            redis.xadd(DEVICE_RESULTS_STREAM, RunStarted(
                task_id=run_task_id(self.run_id), run_id=self.run_id, timestamp=utcnow(), total=len(self.hosts),
                selector=self.selector, targets=",".join(targets), inventory=str(self.inventory),
                requested_by=self.source).to_message())
        except RedisError as exc:  # Redis went away meanwhile
            self.abandon()
            return self._fail_all(f"DeviceVault's Redis at {redact_url(self.settings.redis_url)} failed ({exc})")
        decided: dict[str, dict[str, str]] = {"skip": {}, "fail": {}}
        for result in self.batch.results:
            kind = "skip" if result.status is DeviceStatus.SKIPPED_LOCKED else "fail"
            decided[kind][result.device] = result.error
        return decided

    def _fail_all(self, cause: str) -> dict[str, dict[str, str]]:
        return {"skip": {}, "fail": {h: f"{h}: not backed up into DeviceVault: {cause}" for h in self.hosts}}

    def end(self, found: dict[str, dict]) -> list[DeviceResult]:
        """Hand the collect task's results (``{host: record}`` of its results file) to DeviceVault, release
        the locks; the published results. Nothing when :meth:`begin` handed nothing to DeviceVault."""
        if self.batch is None or self.redis is None:
            return []
        try:
            outcomes = {}
            for host in self.batch.runnable:
                outcome = FetchOutcome(host=host)
                if host in found:
                    apply_record(outcome, found[host], self.batch.redactor)
                else:
                    outcome.error = errors.CollectionFailed(
                        host, "the playbook's collect task ended without a result for this device")
                outcomes[host] = outcome
            results, _ = finish_batch(self.redis, self.settings, self.batch, outcomes)
            return results
        finally:
            self.batch = None
            self._locks.close()

    def abandon(self) -> None:
        """Release the locks without publishing (the playbook ended before its collect task did)."""
        self.batch = None
        self._locks.close()


@contextlib.contextmanager
def _playbook_vault_kept():
    """The playbook's own vault secrets stay what they were: DeviceVault's inventory reader sets the
    process-wide ones to its setting's, and this process is ``ansible-playbook`` (its later tasks, and the
    collect task's worker forked after this, decrypt with them)."""
    from ansible.parsing.vault import VaultSecretsContext

    context = VaultSecretsContext.current(optional=True)
    saved = list(context.secrets) if context is not None else None
    try:
        yield
    finally:
        if context is not None and saved is not None:
            context.secrets[:] = saved + [s for s in context.secrets if s not in saved]


def summary(run: PlaybookRun, results: list[DeviceResult]) -> str:
    """One line for the playbook's output: the run, its source and its counts."""
    counts: dict[str, int] = {}
    for result in results:
        counts[result.status.value] = counts.get(result.status.value, 0) + 1
    said = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no device"
    return (f"DeviceVault run {run.run_id} ({run.source}): {said} "
            "(changed = handed to the index, which decides whether it is a new version)")
