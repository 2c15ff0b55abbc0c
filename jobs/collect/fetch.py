"""The one function through which DeviceVault fetches configurations: :func:`fetch_configs`.

It runs ``playbooks/backup.yml`` through ansible-runner for a batch of hosts at once: one task
(``devicevault.network.collect_batch``, ``run_once``) opens every host's ``network_cli`` connection inside
that task, at most ``forks`` at once, with no ``ansible-connection`` process per device, and writes each
device's outputs to a results file in the runner's private directory, one JSON line per device as it
finishes (see the collection's ``plugin_utils/batch_fetch.py``). This function reads that file and turns it
into one :class:`FetchOutcome` per host; with ``on_results`` it also hands each device's outcome on while the
batch is still running, as its line appears (a group run's devices show up one by one, not all at the end
of their batch). Everything else in DeviceVault sees only this function, so the
way configurations are fetched can change without touching the rest.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

import yaml

from jobs import errors, processes
from jobs.redact import Redactor
from jobs.settings import ANSIBLE_CFG, PLAYBOOKS_DIR, Settings

log = logging.getLogger(__name__)

COLLECT_TASK = "Collect configuration"
RESULTS_FILE = "results.jsonl"  # in the runner's private directory (mode 0700, removed afterwards)
#: the runner's private directory: ``<tmp>/devicevault-runner-<pid of the process that made it>-<random>``
RUNNER_PREFIX = "devicevault-runner-"
_ERROR_KINDS: dict[str, type[errors.DeviceError]] = {
    "authentication": errors.AuthenticationFailed,
    "timeout": errors.DeviceTimeout,
    "connection": errors.ConnectionLost,
    "interrupted": errors.FetchInterrupted,
}


@dataclass
class FetchOutcome:
    host: str
    outputs: list[str] | None = None  # one string per platform command, in order; None when it failed
    error: errors.DeviceError | None = None
    log: str = ""
    duration: float = 0.0


def read_results(path: Path) -> dict[str, dict]:
    """``{host: record}`` from the batch's results file (the collection's ``batch_fetch.read_results``)."""
    from jobs.collect.platforms import collection_module

    return collection_module("batch_fetch").read_results(str(path))


def apply_record(outcome: FetchOutcome, record: dict, redactor: Redactor) -> FetchOutcome:
    """A device's line of the results file into its outcome: its outputs, or its failure (the kind from
    what Ansible said, credentials masked). Also what the ``devicevault`` callback reads a playbook's
    results file with (``jobs.collect.playbook``)."""
    outcome.duration = float(record.get("duration") or 0.0)
    if record.get("failed"):
        error = classify(outcome.host, str(record.get("msg") or ""))
        outcome.error = type(error)(outcome.host, redactor.redact(error.cause))
        outcome.log = redactor.redact(str(record.get("msg") or ""))
    else:
        outcome.outputs = [str(item) for item in record.get("outputs") or []]
    return outcome


#: how often the results file is read for new lines while a batch runs (``on_results``)
TAIL_INTERVAL = 0.25


class _ResultsTail(threading.Thread):
    """Reads the results file's new complete lines while the batch runs and hands the outcomes they make to
    ``on_results`` (from this one thread, a call at a time, every line read together in one call). Lines of
    hosts not asked for, or handed on already, are left alone; a line still being written waits for its end.
    If ``on_results`` raises, it is logged and not called again: what it did not take stays for the caller,
    which gets every outcome from :func:`fetch_configs` anyway."""

    def __init__(self, path: Path, hosts: set[str], on_results: Callable[[dict[str, FetchOutcome]], None],
                 redactor: Redactor):
        super().__init__(name="devicevault-results-tail", daemon=True)
        self.path, self.hosts, self.on_results, self.redactor = path, hosts, on_results, redactor
        self.done = threading.Event()
        self._offset, self._partial, self._seen = 0, b"", set()

    def run(self) -> None:
        while not self.done.wait(TAIL_INTERVAL):
            try:
                chunk = self._new_outcomes()
                if chunk:
                    self.on_results(chunk)
            except Exception:  # noqa: BLE001 - the caller gets every outcome from fetch_configs anyway
                log.warning("handing on results as they came failed; the rest come at the batch's end", exc_info=True)
                return

    def _new_outcomes(self) -> dict[str, FetchOutcome]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return {}
        from jobs.collect.platforms import collection_module

        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        found: dict[str, FetchOutcome] = {}
        parse = collection_module("batch_fetch").parse_result_line
        for line in lines:
            parsed = parse(line)
            if parsed is None:
                continue
            host, record = parsed
            if host in self.hosts and host not in self._seen:
                self._seen.add(host)
                found[host] = apply_record(FetchOutcome(host=host), record, self.redactor)
        return found


@lru_cache(maxsize=1)
def _error_patterns() -> list[tuple[type[errors.DeviceError], re.Pattern[str]]]:
    data = yaml.safe_load((Path(__file__).parent / "ansible_errors.yml").read_text())
    return [(_ERROR_KINDS[kind], re.compile(p, re.I)) for kind, patterns in data.items() for p in patterns]


def classify(device: str, message: str) -> errors.DeviceError:
    """The specific :class:`~jobs.errors.DeviceError` for one of Ansible's failure messages."""
    cause = " ".join(message.split()) or "unknown failure"
    for cls, pattern in _error_patterns():
        if pattern.search(cause):
            label = {
                errors.AuthenticationFailed: "authentication failed",
                errors.DeviceTimeout: "timed out",
                errors.ConnectionLost: "connection lost",
                errors.FetchInterrupted: "interrupted",
            }[cls]
            return cls(device, f"{label}: {cause}")
    return errors.CollectionFailed(device, cause)


def _failure_message(res: dict) -> str:
    for item in res.get("results") or []:
        if isinstance(item, dict) and item.get("failed"):
            return str(item.get("msg") or item.get("module_stderr") or item.get("stderr") or "")
    return str(res.get("msg") or res.get("module_stderr") or res.get("stderr") or res.get("reason") or "")


def runner_env(settings: Settings, workdir: Path) -> dict[str, str]:
    """Environment of the ansible processes: our ansible.cfg, UTF-8, timeouts, nothing under ~/.ansible."""
    bindir = str(Path(sys.executable).parent)  # ansible-playbook and ansible-connection of this environment
    env = {
        "PATH": os.pathsep.join([bindir, os.environ.get("PATH", "/usr/bin:/bin")]),
        "ANSIBLE_CONFIG": str(ANSIBLE_CFG),
        "LC_ALL": "C.UTF-8",
        "LANG": "C.UTF-8",
        "ANSIBLE_HOME": str(workdir / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(workdir / "tmp"),
        "ANSIBLE_PERSISTENT_CONTROL_PATH_DIR": str(workdir / "pc"),
        "ANSIBLE_PERSISTENT_COMMAND_TIMEOUT": str(settings.device_timeout),
        "ANSIBLE_PERSISTENT_CONNECT_TIMEOUT": str(settings.device_timeout),
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "1",
    }
    if settings.max_output_mb is not None:
        env["DEVICEVAULT_MAX_OUTPUT_MB"] = str(settings.max_output_mb)
    vault = settings.vault_ids()
    if vault:  # the same vault passwords as DeviceVault's inventory reading: the files' paths, never their text
        env["ANSIBLE_VAULT_IDENTITY_LIST"] = ",".join(f"{label}@{file}" for label, file in vault)
        env["ANSIBLE_VAULT_PASSWORD_FILE"] = str(vault[0][1])  # instead of a relative one the worker inherited
    return env


def _extravars(settings: Settings, results: Path) -> dict[str, str | int]:
    """Where the batch writes its results, how many processes share it, and a site's own platform
    directory (for the playbook and DeviceVault's terminal/cliconf plugin)."""
    from jobs.collect.platforms import PLATFORMS_DIR_ENV

    extra = os.environ.get(PLATFORMS_DIR_ENV)
    found: dict[str, str | int] = {"devicevault_results_path": str(results)}
    if settings.fetch_processes:
        found["devicevault_fetch_processes"] = settings.fetch_processes
    if extra:
        found["devicevault_platforms_dir"] = str(Path(extra).resolve())
    return found


def sweep_runner_dirs() -> list[Path]:
    """Remove the runner directories of processes that are gone (a work horse killed with its worker, or by
    the OOM killer, never reached its ``finally``); every batch does it first. Returns what it removed."""
    removed = []
    for path in Path(tempfile.gettempdir()).glob(f"{RUNNER_PREFIX}*-*"):
        pid = path.name[len(RUNNER_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or processes.alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _batch_inventory(inventory: Path | str, hosts: list[str], settings: Settings, directory: Path
                     ) -> str | list[str]:
    """The inventory the batch's ansible-playbook reads: just the batch's hosts, written from the inventory
    this process parsed (``jobs.collect.inventory.write_batch_inventory``), or the whole one where that
    cannot be done (then ansible-playbook also reports what is wrong with it): ansible-runner's ``inventory``,
    a path, or the sources as a list (one ``-i`` each)."""
    from jobs.collect.inventory import inventory_sources, open_inventory, write_batch_inventory

    try:
        written = write_batch_inventory(open_inventory(inventory, settings), hosts, directory)
    except errors.InventoryError:
        written = None
    sources = [str(p.absolute()) for p in inventory_sources(inventory)]
    if written:
        return str(written)
    return sources[0] if len(sources) == 1 else sources


def _run(workdir: Path, playbook: str, inventory: Path | str, hosts: list[str], settings: Settings, extravars: dict,
         handle, **options):
    """One ansible-runner run of ``playbook`` for ``hosts`` in the private directory ``workdir``: the batch's
    own inventory, DeviceVault's environment, the job's time limit, and nothing written to an artifact
    directory (``handle`` sees every event and keeps none)."""
    import ansible_runner

    return ansible_runner.run(
        private_data_dir=str(workdir),
        project_dir=str(PLAYBOOKS_DIR),
        playbook=playbook,
        inventory=_batch_inventory(inventory, hosts, settings, workdir / "inventory"),
        limit=",".join(hosts),
        extravars=extravars,
        envvars=runner_env(settings, workdir),
        timeout=settings.job_timeout,
        quiet=True,
        event_handler=handle,
        suppress_env_files=True,
        **options,
    )


@dataclass
class PushOutcome:
    """What :func:`push_config` did: ``sent`` configuration lines, or ``error`` (the device named)."""

    host: str
    sent: int = 0
    error: errors.DeviceError | None = None


RESTORE_TASK = "Restore configuration"


def push_config(host: str, config: str, *, inventory: Path | str, settings: Settings,
                redactor: Redactor | None = None) -> PushOutcome:
    """Put ``config`` on ``host`` with its platform file's ``restore`` commands: ``playbooks/restore.yml``
    (the collection's ``devicevault.network.restore`` action over the host's ``network_cli`` connection, the
    inventory's credentials) through ansible-runner, like :func:`fetch_configs`. The text goes to the task
    as a file in the runner's private directory (mode 0600), never as an argument, and nothing of the run
    is written to an artifact directory."""
    redactor = redactor or Redactor()
    outcome = PushOutcome(host=host)
    failures: list[str] = []
    general: list[str] = []
    sweep_runner_dirs()
    workdir = Path(tempfile.mkdtemp(prefix=f"{RUNNER_PREFIX}{os.getpid()}-"))

    def handle(event: dict) -> bool:
        data = event.get("event_data") or {}
        if data.get("task") == RESTORE_TASK and event.get("event") == "runner_on_ok":
            outcome.sent = int((data.get("res") or {}).get("sent") or 0)
        elif data.get("task") == RESTORE_TASK and event.get("event") in ("runner_on_failed", "runner_on_unreachable"):
            failures.append(_failure_message(data.get("res") or {}) or "failed")
        elif event.get("stdout"):
            general.append(event["stdout"])
        return False

    try:
        (workdir / "env").mkdir()
        config_file = workdir / "restore.cfg"
        fd = os.open(config_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write(config)
        extravars = {k: v for k, v in _extravars(settings, workdir / RESULTS_FILE).items()
                     if k == "devicevault_platforms_dir"}
        extravars["devicevault_restore_file"] = str(config_file)
        status = _run(workdir, "restore.yml", inventory, [host], settings, extravars, handle).status
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if failures:
        error = classify(host, failures[0])
        outcome.error = type(error)(host, redactor.redact(error.cause))
    elif status != "successful":
        tail = [line for line in "".join(general).splitlines() if line.strip()][-3:]
        outcome.error = errors.FetchInterrupted(
            host, f"the restore playbook ended ({status})" + (": " + redactor.redact(" | ".join(tail)) if tail else ""))
    return outcome


def fetch_configs(
    hosts: Iterable[str],
    *,
    inventory: Path | str,
    settings: Settings,
    redactor: Redactor | None = None,
    on_results: Callable[[dict[str, FetchOutcome]], None] | None = None,
) -> dict[str, FetchOutcome]:
    """Fetch the configuration of every host in ``hosts`` in one ansible-runner call.

    Returns one outcome per host: ``outputs`` (the platform's command outputs in order) or ``error`` (a
    :class:`~jobs.errors.DeviceError` naming the device and the cause). Credentials are masked in logs and
    errors by ``redactor``.

    ``on_results``, if given, is called while the batch runs with ``{host: outcome}`` of the devices that
    finished since its last call (from one other thread, never two calls at once, all calls over before this
    function returns). The returned outcomes still include those hosts; hosts with no result before the
    batch ended (a killed playbook, the job's hard limit) are never handed on, only returned.
    """
    hosts = list(dict.fromkeys(hosts))
    outcomes = {h: FetchOutcome(host=h) for h in hosts}
    if not hosts:
        return outcomes
    redactor = redactor or Redactor()
    general: list[str] = []  # output not tied to a device (a playbook or inventory error, the batch task failing)
    sweep_runner_dirs()
    workdir = Path(tempfile.mkdtemp(prefix=f"{RUNNER_PREFIX}{os.getpid()}-"))
    results = workdir / RESULTS_FILE

    def handle(event: dict) -> bool:
        data = event.get("event_data") or {}
        if event.get("event") in ("runner_on_failed", "runner_on_unreachable") and data.get("task") == COLLECT_TASK:
            res = data.get("res") or {}
            general.append(f"{COLLECT_TASK}: {_failure_message(res) or 'failed'}\n")  # the whole task failed
        elif event.get("stdout") and data.get("task") != COLLECT_TASK:
            general.append(event["stdout"])
        return False  # nothing is written to the artifact directory

    tail = _ResultsTail(results, set(hosts), on_results, redactor) if on_results is not None else None
    try:
        (workdir / "env").mkdir()
        if tail is not None:
            tail.start()
        # one result per device comes from the results file, not from the per-host tasks
        status = _run(workdir, "backup.yml", inventory, hosts, settings, _extravars(settings, results), handle,
                      forks=min(settings.forks, len(hosts)), skip_tags="per_host").status
        found = read_results(results)
    finally:
        if tail is not None:
            tail.done.set()
            tail.join()
        shutil.rmtree(workdir, ignore_errors=True)

    for host, outcome in outcomes.items():
        record = found.get(host)
        if record is not None:
            apply_record(outcome, record, redactor)
            continue
        cause = (
            f"no answer before the job's hard limit of {settings.job_timeout}s"
            if status == "timeout"
            else f"ansible-runner ended ({status}) without a result for this device"
        )
        tail = [line for line in "".join(general).splitlines() if line.strip()][-3:]
        if tail and status != "timeout":
            cause += ": " + redactor.redact(" | ".join(tail))
        outcome.error = (errors.DeviceTimeout if status == "timeout" else errors.FetchInterrupted)(host, cause)
    return outcomes
