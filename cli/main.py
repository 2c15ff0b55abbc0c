"""``devicevault``: run backups, workers and the consumer; browse devices, versions and diffs.

Every listing command prints a table, or JSON with ``--json`` for scripts. Settings come from the
``DEVICEVAULT_*`` environment (see ``jobs/settings.py``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import click

from jobs.settings import Settings
from jobs.streams.results import DeviceStatus
from storage.index.models import CopyStatus

from .common import (Fail, Main, daemon_logging, emit, guard, index_sessions, load_settings, redis_client,
                     storage_layout, table)
from .compliance import compliance
from .notify import notifier, notify
from .operations import hygiene, status, up
from .portal import portal, users
from .schedule import schedule, scheduler
from .snapshot import export
from .streams import dlq

os.environ.setdefault("LC_ALL", "C.UTF-8")


@click.group(cls=Main)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("--debug", is_flag=True, help="Show the traceback of an error instead of its one line.")
@click.pass_context
def main(ctx: click.Context, verbose: int, debug: bool) -> None:
    """DeviceVault: network configuration backups driven by Ansible."""
    ctx.meta["devicevault.debug"] = debug
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from jobs.logs import OneLine

    for handler in logging.getLogger().handlers:  # a host name's newline or escape never makes a log line
        handler.addFilter(OneLine())


# --- the lab ----------------------------------------------------------------------------------------------
@main.group()
def lab() -> None:
    """The simulated device lab (SSH devices on loopback addresses)."""


def _lab_state(state_dir: str | None, settings: Settings) -> Path:
    return Path(state_dir) if state_dir else settings.home / "lab"


@lab.command("up")
@click.option("--inventory", type=click.Path(exists=True), help="Inventory the lab serves (default: the settings' inventory).")
@click.option("--state-dir", help="Lab state directory (default: <home>/lab).")
@guard
def lab_up(inventory: str | None, state_dir: str | None) -> None:
    """Start the lab in the background; returns once every device accepts connections."""
    from lab import commands

    settings = load_settings()
    pid = commands.up(Path(inventory or settings.inventory), _lab_state(state_dir, settings), daemon=True)
    click.echo(f"lab running (pid {pid}), state in {_lab_state(state_dir, settings)}")


@lab.command("down")
@click.option("--state-dir")
@guard
def lab_down(state_dir: str | None) -> None:
    """Stop the lab."""
    from lab import commands

    state = _lab_state(state_dir, load_settings())
    click.echo("lab stopped" if commands.down(state) else f"no lab running for {state}")


@lab.command("change")
@click.argument("host")
@click.option("-n", "--count", default=1, show_default=True, help="How many changes to make.")
@click.option("--remove", metavar="REGEX", help="Remove the lines matching REGEX instead (e.g. '^service password-encryption$').")
@click.option("--add", metavar="LINE", help="Add LINE instead (unless the configuration has it).")
@click.option("--state-dir")
@guard
def lab_change(host: str, count: int, remove: str | None, add: str | None, state_dir: str | None) -> None:
    """Change a lab device's running configuration (a new line each time; or --remove / --add a line)."""
    from lab import commands

    changed = commands.change(_lab_state(state_dir, load_settings()), host, count, remove=remove, add=add)
    click.echo(f"{host}: configuration changed" if changed else f"{host}: nothing to change")
    for line in changed if remove is not None or add is not None else []:
        click.echo(f"  {line}")


@lab.command("fault")
@click.argument("host")
@click.argument("mode", type=click.Choice(["none", "auth_fail", "slow", "hang", "disconnect", "answer"]))
@click.option("--delay", type=float, help="Seconds per response for 'slow'.")
@click.option("--text", help="What 'answer' answers ({command}: the command line; empty: nothing).")
@click.option("--commands", help="Regex of the command lines 'answer' answers (default: every command a backup sends).")
@click.option("--state-dir")
@guard
def lab_fault(host: str, mode: str, delay: float | None, text: str | None, commands: str | None,
              state_dir: str | None) -> None:
    """Make a lab device misbehave (or behave again with 'none')."""
    from lab import commands as lab_commands

    params = {k: v for k, v in (("delay", delay), ("text", text), ("commands", commands)) if v is not None}
    lab_commands.fault(_lab_state(state_dir, load_settings()), host, mode, **params)
    click.echo(f"{host}: fault {mode}")


# --- running backups --------------------------------------------------------------------------------------
@main.command()
@click.option("--group", "groups", multiple=True, help="Back up this inventory group (repeatable).")
@click.option("--host", "hosts", multiple=True, help="Back up this host (repeatable).")
@click.option("--inventory", type=click.Path(exists=True))
@click.option("--wait/--no-wait", default=False, help="Wait for the run to finish, with a progress bar.")
@click.option("--timeout", default=3600, show_default=True, help="Seconds to wait with --wait.")
@click.option("--json", "as_json", is_flag=True)
@guard
def backup(groups, hosts, inventory, wait, timeout, as_json) -> None:
    """Start a backup run of every device, or of --group/--host."""
    from jobs.collect.runs import start_backup

    settings = load_settings()
    redis = redis_client(settings)
    started = start_backup(redis, settings, groups=list(groups), hosts=list(hosts), inventory=inventory, requested_by="cli")
    if not wait:
        payload = {"run_id": started.run_id, "devices": len(started.hosts), "jobs": started.job_ids}
        click.echo(json.dumps(payload) if as_json else f"run {started.run_id}: {len(started.hosts)} device(s) queued")
        return
    rows = wait_for_run(settings, started.run_id, len(started.hosts), timeout, quiet=as_json)
    copies = _run_copies(settings, started.run_id)
    if as_json:
        click.echo(json.dumps({"run_id": started.run_id, "results": rows, "copies": copies}, indent=2))
    else:
        _run_summary(started.run_id, rows)
        _copies_summary(copies)
    if any(r["status"] == DeviceStatus.FAILED for r in rows):
        sys.exit(1)


def _run_summary(run_id: str, rows: list[dict]) -> None:
    """One line per device, then the run's count per status."""
    from collections import Counter

    table(rows, ["device", "platform", "status", "sha256", "duration", "error"])
    counts = Counter(r["status"] for r in rows)
    click.echo(f"run {run_id}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))


def _run_copies(settings: Settings, run_id: str) -> dict[str, dict[str, int]]:
    from storage.index.queries import copy_counts

    with index_sessions(settings)() as session:
        return copy_counts(session, run_id)


def _copies_summary(copies: dict[str, dict[str, int]]) -> None:
    """One line: what each storage target did with the run's new versions."""
    if copies:
        parts = [f"{target} " + ", ".join(f"{n} {status}" for status, n in sorted(by.items()))
                 for target, by in sorted(copies.items())]
        click.echo("copies: " + "; ".join(parts))
        if any(CopyStatus.PENDING in by for by in copies.values()):
            click.echo("pending copies are retried until they land (devicevault pending)")


def wait_for_run(settings: Settings, run_id: str, total: int, timeout: float, *, quiet: bool = False) -> list[dict]:
    """Follow a run in the index until it is finished; a progress bar on stderr."""
    from tqdm import tqdm

    from storage.index.queries import NotFound, run_progress, run_results

    Session = index_sessions(settings)
    deadline = time.monotonic() + timeout
    with tqdm(total=total, unit="device", desc="backup", disable=quiet, file=sys.stderr) as bar:
        while True:
            with Session() as session:
                try:
                    done, _, finished = run_progress(session, run_id)
                except NotFound:  # the consumer has not recorded the run's start yet
                    done, finished = 0, False
            bar.update(done - bar.n)
            if finished:
                break
            if time.monotonic() > deadline:
                raise Fail(f"run {run_id} did not finish within {timeout}s ({done}/{total} devices reported); "
                            "are a worker and the consumer running?")
            time.sleep(0.5)
    with Session() as session:
        return [dict(r, sha256=(r["sha256"] or "")[:12]) for r in run_results(session, run_id)]


@main.command()
@click.option("--queue", "queues", multiple=True,
              help="Queues to serve (default: the collector queue and storage.<type> of every target type).")
@click.option("--group", "groups", multiple=True,
              help="Serve only the devices of this collection group (queue collector.group.<name>; repeatable).")
@click.option("--burst", is_flag=True, help="Exit when the queues are empty.")
@click.option("--name", help="Worker name.")
def worker(queues, groups, burst, name) -> None:
    """Run an RQ worker that collects and/or stores.

    Devices whose inventory sets ``devicevault_collector_group: <name>`` are collected from
    ``collector.group.<name>``: run ``devicevault worker --group <name>`` on a host of that site (against
    the same Redis). A worker serving storage queues also hands copies that are due again (retries with
    backoff, or whose job was lost) to new storage jobs, every DEVICEVAULT_RETRY_POLL seconds.
    """
    from jobs.queues import Queue
    from jobs.worker import DeviceVaultWorker

    settings = load_settings()
    redis = redis_client(settings, blocking=True)
    redis.ping()  # Redis down: one line (cli.common.operational_error) before anything starts
    daemon_logging(settings)
    layout = storage_layout(settings)
    names = list(queues) + [settings.collector_queue_for(g) for g in groups]
    if not names:
        names = [settings.collector_queue] + [settings.storage_queue_for(t) for t in layout.types()]
    served = [t for t in layout.types() if settings.storage_queue_for(t) in names]
    if served and not burst:
        _start_retry_pump(settings, layout, served)
    w = DeviceVaultWorker([Queue(q, connection=redis) for q in names], connection=redis, name=name)
    w.work(burst=burst, logging_level="INFO", with_scheduler=True)


def _start_retry_pump(settings: Settings, layout, types: list[str]) -> None:
    """A daemon thread of the worker's main process: hand due outbox copies to storage jobs."""
    import threading

    from jobs.deliver.store import requeue_due
    from jobs.tasks import enqueue_store

    log = logging.getLogger("devicevault.retry")
    redis = redis_client(settings)

    def pump() -> None:
        while True:
            try:
                handed = requeue_due(redis, settings, layout,
                                     lambda target, ids: enqueue_store(redis, settings, layout, target, ids), types)
                for target, n in handed.items():
                    log.info("handed %d due copy(ies) to a storage job for %s", n, target)
            except Exception as exc:  # noqa: BLE001 - keep pumping; Redis may be restarting
                log.warning("retry pump: %s", exc)
            time.sleep(max(0.2, settings.retry_poll))

    threading.Thread(target=pump, name="devicevault-retry-pump", daemon=True).start()


@main.command()
@click.option("--name", help="Consumer name in the group (default: host-pid).")
@click.option("--idle-exit", type=float, help="Exit after this many seconds without messages.")
@click.option("--claim-idle", default=30.0, show_default=True, help="Take over other consumers' messages pending this long (s).")
@click.option("--max-deliveries", type=int, default=5, show_default=True, envvar="DEVICEVAULT_STREAM_MAX_DELIVERIES",
              help="Tries before a message that keeps failing moves to the dead-letter stream.")
@click.option("--crash-after-commit", type=int, hidden=True, help="Failure tests: exit after N commits, before acking.")
@click.option("--compliance/--no-compliance", "check_compliance", default=True, show_default=True,
              help="Also check each new version against the compliance rules (a thread; consumer group 'compliance').")
def consumer(name, idle_exit, claim_idle, max_deliveries, crash_after_commit, check_compliance) -> None:
    """Write collection and storage results from the Redis streams into the index (and check each new
    version against the compliance rules)."""
    from jobs.streams.consumer import Consumer

    settings = load_settings()
    redis = redis_client(settings, blocking=True)
    redis.ping()  # Redis down: one line (cli.common.operational_error) before the index is opened
    daemon_logging(settings)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    c = Consumer(
        redis,
        index_sessions(settings),
        name=name,
        claim_idle_ms=int(claim_idle * 1000),
        max_deliveries=max_deliveries,
        inventory=settings.inventory,
        crash_after_commit=crash_after_commit,
    )
    if check_compliance:
        _start_compliance(settings, f"{c.name}-compliance", claim_idle, max_deliveries, stop=lambda: bool(stopping))
    try:
        c.run(stop=lambda: bool(stopping), idle_exit=idle_exit)
    except KeyboardInterrupt:
        pass
    click.echo(f"consumer {c.name}: {c.applied} result(s) applied", err=True)


def _start_compliance(settings: Settings, name: str, claim_idle: float, max_deliveries: int, stop) -> None:
    """A daemon thread of the consumer's process: the compliance checks of every new version
    (``jobs.compliance.checker``), with their own Redis connection and consumer group."""
    import threading

    from jobs.compliance.checker import ComplianceConsumer, checker_for

    log = logging.getLogger("devicevault.compliance")

    def run() -> None:
        while not stop():
            try:  # made here: a storage file or Redis problem never keeps the index consumer from starting
                redis = redis_client(settings, blocking=True)
                checker = ComplianceConsumer(redis, checker_for(settings, redis, index_sessions(settings)), name=name,
                                             claim_idle_ms=int(claim_idle * 1000), max_deliveries=max_deliveries)
                checker.run(stop=stop)
            except Exception:  # noqa: BLE001 - never the end of the checks: logged, started again
                log.exception("compliance checks stopped; starting again in 5 s")
                time.sleep(5)

    threading.Thread(target=run, name="devicevault-compliance", daemon=True).start()


@main.command()
@click.option("--stop", is_flag=True, help="Stop what the demo started.")
@click.option("--timeout", default=900, show_default=True)
@click.option("--portal-port", default=8501, show_default=True, help="The portal's port (0: no portal).")
@guard
def demo(stop, timeout, portal_port) -> None:
    """Start Redis, the lab, workers and the consumer, then back up every lab device
    (a smaller lab: set DEVICEVAULT_INVENTORY to one from python -m lab.generate_inventory)."""
    from jobs.collect.runs import start_backup

    from .demo import start_services, stop_services

    settings = load_settings()
    if stop:
        stop_services(settings, echo=click.echo)
        return
    start_services(settings, echo=click.echo, portal_port=portal_port)
    settings = load_settings()  # with the password of the Redis it may have started
    started = start_backup(redis_client(settings), settings, requested_by="demo")
    click.echo(f"backing up {len(started.hosts)} devices (run {started.run_id})")
    rows = wait_for_run(settings, started.run_id, len(started.hosts), timeout)
    _run_summary(started.run_id, rows)
    click.echo(f"versions in git: {settings.git_repo}  (git -C {settings.git_repo} log --stat)")
    click.echo(f"versions in fs:  {settings.fs_root}")
    click.echo(f"index:           {settings.database_url}")
    click.echo("try: devicevault devices | devicevault lab change <host> && devicevault backup --wait && "
               "devicevault diff <host>;  stop everything: devicevault demo --stop")


# --- browsing -----------------------------------------------------------------------------------------------
@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--unsaved", "unsaved_only", is_flag=True, help="only devices whose running config is not saved")
@click.option("--all", "show_all", is_flag=True, help="retired devices too (gone from the inventory; DEVICEVAULT_RETIRE_AFTER)")
@guard
def devices(as_json, unsaved_only, show_all) -> None:
    """Devices in the index with their health (the portal's status: failed, never backed up, stale, unsaved,
    changed, ok), the last run's outcome (STATUS) and number of versions. UNSAVED is "yes" when the
    running configuration differed from the startup configuration at the newest backup ("-": the
    platform has no startup configuration). Retired devices (gone from the inventory for longer than
    DEVICEVAULT_RETIRE_AFTER) are left out; --all lists them too, with health "retired"."""
    from storage.index.queries import list_devices

    with index_sessions(load_settings())() as session:
        rows = list_devices(session, include_retired=show_all)
    if unsaved_only:
        rows = [r for r in rows if r["unsaved"]]
    if not as_json:
        rows = [{**r, "unsaved": {True: "yes", False: "no", None: "-"}[r["unsaved"]]} for r in rows]
    emit(rows, ["name", "health", "group", "platform", "status", "versions", "unsaved", "last_success",
                 "last_change", "last_error"], as_json)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", default=20, show_default=True)
@guard
def runs(as_json, limit) -> None:
    """The latest backup runs."""
    from storage.index.queries import list_runs

    with index_sessions(load_settings())() as session:
        rows = list_runs(session, limit)
    emit(rows, ["run_id", "created_at", "finished_at", "status", "selector", "requested_by", "total"], as_json)


@main.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@guard
def run(run_id, as_json) -> None:
    """Per-device results of one run."""
    from storage.index.queries import get_run, run_results

    with index_sessions(load_settings())() as session:
        pruned = get_run(session, run_id).pruned()  # an unknown run: one line, exit 1
        rows = run_results(session, run_id)
    emit(rows, ["device", "platform", "status", "duration", "error"], as_json)
    if not as_json and any(pruned.values()):
        click.echo("older results removed by index retention (prune-index): "
                   + ", ".join(f"{n} {status}" for status, n in pruned.items() if n))


@main.command()
@click.argument("host")
@click.option("--json", "as_json", is_flag=True)
@guard
def versions(host, as_json) -> None:
    """Stored versions of HOST, oldest first."""
    from storage.index.queries import device_versions

    with index_sessions(load_settings())() as session:
        found = device_versions(session, host)
    rows = [
        dict(v.as_dict(), sha=v.sha256[:12],
             targets=",".join(b if s in CopyStatus.LANDED else f"{b}({s})" for b, _, s in v.copies))
        for v in found
    ]
    emit(rows, ["number", "created_at", "sha", "size", "targets", "run_id"], as_json)


def _version_text(settings: Settings, host: str, selector: str | None, raw: bool = False) -> tuple[str, object]:
    from storage.errors import StorageError
    from storage.index.queries import device_versions, resolve_version
    from storage.retrieve import read_first

    with index_sessions(settings)() as session:
        found = device_versions(session, host)
    version = resolve_version(found, selector, device=host)
    layout = storage_layout(settings)
    if raw:
        return _raw_text(layout, host, version), version
    try:
        content, _ = read_first(version.copies, version.sha256, layout.open)
    except StorageError:  # a version a backup has just made: its storage jobs may not have run yet
        content = _unstored(settings, layout, host, version)
        if content is None:
            raise
    return content.decode("utf-8", errors="surrogateescape"), version


def _unstored(settings: Settings, layout, host: str, version) -> bytes | None:
    from redis import Redis
    from redis.exceptions import RedisError

    from jobs.deliver.outbox import unstored_text

    try:
        return unstored_text(Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5),
                             version.copies, run_id=version.run_id, device=host, sha256=version.sha256,
                             codec=layout.sealing_codec())
    except (RedisError, OSError, ValueError):  # Redis down, a key that cannot unseal: the copies' error stands
        return None


def _raw_text(layout, host: str, version) -> str:
    """The raw device output kept with ``version`` (devicevault_keep_raw), from the first target that reads."""
    from storage.errors import StorageError

    if not version.raw_copies:
        raise click.ClickException(f"{host} v{version.number}: no raw copy kept (set devicevault_keep_raw: true "
                                   "for the device and give its location an encrypted target)")
    problems = []
    for backend, ref in version.raw_copies:
        try:
            return layout.open(backend).read(ref).decode("utf-8", errors="surrogateescape")
        except (StorageError, OSError) as exc:
            problems.append(f"{backend}: {exc}")
    raise click.ClickException(f"{host} v{version.number}: no raw copy could be read: {'; '.join(problems)}")


def _print_text(text: str, raw: bool) -> None:
    """What ``show``/``diff`` print: on a terminal a device's control characters (ANSI escapes, screen clear,
    terminal title, bidi overrides) are shown escaped, never acted on; ``--raw`` and pipes get the bytes as
    stored (click.echo would strip ANSI sequences from a pipe)."""
    from jobs.controls import escape_controls

    if not raw and sys.stdout.isatty():
        text = escape_controls(text, keep_newlines=True)
    out = click.get_binary_stream("stdout")
    out.write(text.encode("utf-8", errors="surrogateescape"))
    out.flush()


# ignore_unknown_options: a negative VERSION (-1, -2) is a version, not an option
@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("host")
@click.argument("version", required=False)
@click.option("--raw", is_flag=True, help="The device output exactly as read, secrets included (devicevault_keep_raw), "
                                          "its bytes unescaped even on a terminal.")
@guard
def show(host, version, raw) -> None:
    """Print a stored configuration of HOST (the newest, or VERSION: a number, -1 for newest, or a sha prefix).
    On a terminal, control characters are escaped."""
    text, _ = _version_text(load_settings(), host, version, raw=raw)
    _print_text(text, raw)


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("host")
@click.argument("a", required=False)
@click.argument("b", required=False)
@click.option("-U", "--context", "context_lines", default=3, show_default=True)
@click.option("--raw", is_flag=True, help="Control characters unescaped even on a terminal.")
@guard
def diff(host, a, b, context_lines, raw) -> None:
    """Unified diff between two versions of HOST (default: the previous and the newest; -1 = newest); each
    hunk header names the configuration section it is in (``@@ ... @@ interface Gi0/1``). On a terminal,
    control characters are escaped."""
    settings = load_settings()
    old_text, old = _version_text(settings, host, a if a is not None else "-2")
    new_text, new = _version_text(settings, host, b if b is not None else "-1")
    from jobs.diffs import unified_diff

    patch = unified_diff(old_text, new_text, f"{host} v{old.number} {old.sha256[:12]}",
                         f"{host} v{new.number} {new.sha256[:12]}", context=context_lines)
    _print_text(patch, raw)


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("host")
@click.argument("version")
@click.option("--dry-run", is_flag=True, help="Only show the difference between the device now and VERSION.")
@click.option("--json", "as_json", is_flag=True)
@guard
def restore(host, version, dry_run, as_json) -> None:
    """Put VERSION of HOST back on the device (a number, -1 = newest, or a sha256 prefix): read the device now,
    show the difference, push the version with the platform file's restore commands (a full replace or a
    merge), back the device up and say whether it now matches. Refused where the platform has no restore
    mechanism, or where the version's secrets were masked and no raw copy was kept. Exit status 1 when the
    device does not match afterwards."""
    from jobs.collect.restore import RestoreStatus, restore as run_restore

    settings = load_settings()
    result = run_restore(redis_client(settings), settings, host, version, dry_run=dry_run, requested_by="cli")
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        _print_text(result.diff, False)
        if result.remaining:
            click.echo("still different after the restore:")
            _print_text(result.remaining, False)
        click.echo(result.summary())
    if result.status in (RestoreStatus.DIFFERS, RestoreStatus.UNCHECKED):
        sys.exit(1)


@main.command("search-index")
@click.option("--json", "as_json", is_flag=True)
@guard
def search_index(as_json) -> None:
    """Fill the search index from storage: the newest version of every device not indexed yet (an index from
    before the search index; afterwards the index consumer keeps it current). Safe to run again."""
    from tqdm import tqdm

    from jobs.ops.search_index import backfill

    settings = load_settings()
    layout = storage_layout(settings)
    with tqdm(unit="device", desc="search-index", file=sys.stderr, disable=as_json) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        outcome = backfill(index_sessions(settings), layout.open, progress=progress)
    if as_json:
        click.echo(json.dumps({"indexed": outcome.indexed, "failed": outcome.failed}))
    else:
        click.echo(f"{outcome.indexed} device(s) indexed; {len(outcome.failed)} could not be read")
        for line in outcome.failed:
            click.echo(f"  {line}")
    if outcome.failed:
        raise SystemExit(1)


# --- storage upkeep ---------------------------------------------------------------------------------------
@main.command()
@click.option("--repair", is_flag=True, help="Write missing and corrupt copies back from a good copy.")
@click.option("--target", "targets", multiple=True, help="Check only this target (repeatable).")
@click.option("--host", "hosts", multiple=True, help="Check only this device (repeatable).")
@click.option("--json", "as_json", is_flag=True)
@guard
def verify(repair, targets, hosts, as_json) -> None:
    """Scrub: read every version back from every target and check its sha256.

    Reports missing and corrupt copies (and targets that cannot be reached); exits 1 while any problem is
    left unrepaired.
    """
    from tqdm import tqdm

    from jobs.deliver.verify import verify as scrub

    settings = load_settings()
    with tqdm(unit="copy", desc="verify", file=sys.stderr, disable=as_json) as bar:
        report = scrub(index_sessions(settings), storage_layout(settings), repair=repair,
                       targets=list(targets) or None,
                       devices=list(hosts) or None, progress=bar.update, total=lambda n: setattr(bar, "total", n))
    rows = [p.as_dict() for p in report.problems]
    if as_json:
        click.echo(json.dumps({"checked": report.checked, "skipped": report.skipped, "problems": rows}, indent=2))
    else:
        if rows:
            table(rows, ["device", "version", "sha256", "target", "problem", "repaired", "detail"])
        fixed = sum(p.repaired for p in report.problems)
        click.echo(f"verify: {report.checked} copies checked, {len(rows)} problem(s), {fixed} repaired, "
                   f"{report.skipped} pending or pruned not read")
    if not report.clean:
        sys.exit(1)


@main.command()
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option("--target", "targets", multiple=True, help="Only this target (repeatable).")
@click.option("--json", "as_json", is_flag=True)
@guard
def prune(dry_run, targets, as_json) -> None:
    """Apply each target's retention (keep_last / keep_days); never the newest version nor the last copy."""
    from jobs.deliver.retention import prune as apply_retention

    settings = load_settings()
    removed = apply_retention(index_sessions(settings), storage_layout(settings), dry_run=dry_run,
                              targets=list(targets) or None)
    emit([r.as_dict() for r in removed], ["device", "target", "created_at", "ref"], as_json)
    if not as_json:
        click.echo(f"{'would remove' if dry_run else 'removed'} {len(removed)} copy(ies)")


@main.command("prune-index")
@click.option("--dry-run", is_flag=True, help="Only count what would be removed.")
@click.option("--days", type=click.FloatRange(min=0), default=None,
              help="Keep this many days instead of DEVICEVAULT_RESULT_RETENTION_DAYS (0: keep everything).")
@click.option("--json", "as_json", is_flag=True)
@guard
def prune_index(dry_run, days, as_json) -> None:
    """Index retention: remove device results and runs older than DEVICEVAULT_RESULT_RETENTION_DAYS, except
    results that made a version and each device's latest result and latest success (storage/index/retention.py;
    the scheduler's maintenance pass does this hourly)."""
    from storage.index.retention import prune_index as apply_index_retention

    settings = load_settings()
    done = apply_index_retention(index_sessions(settings), settings.result_retention_days if days is None else days,
                                 dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(done.as_dict(), indent=2))
        return
    if done.cutoff is None:
        click.echo("index retention is off (0 days): nothing removed")
        return
    verb = "would remove" if dry_run else "removed"
    by_status = ", ".join(f"{n} {status}" for status, n in sorted(done.results.items())) or "none"
    click.echo(f"{verb} {done.removed} device result(s) of runs started before {done.cutoff:%Y-%m-%d %H:%M} UTC "
               f"({by_status}) and {done.runs} run(s); results that made a version and each device's latest "
               "result and latest success are kept")


@main.command()
@click.option("--json", "as_json", is_flag=True)
@guard
def pending(as_json) -> None:
    """Copies that have not reached their target yet (they are retried with backoff until they land)."""
    from jobs.deliver.outbox import waiting
    from storage.index.queries import pending_copies

    settings = load_settings()
    redis = redis_client(settings)
    redis.ping()  # Redis down: one line before any output
    with index_sessions(settings)() as session:
        rows = pending_copies(session)
    emit(rows, ["device", "target", "sha256", "attempts", "next_attempt", "error"], as_json)
    if not as_json:
        counts = waiting(redis, storage_layout(settings).all_targets())
        click.echo("in the outbox: " + ", ".join(f"{t} {n}" for t, n in counts.items()))


# the commands of the sub-modules (they share this module's helpers through cli/common.py)
for command in (status, hygiene, up, schedule, scheduler, portal, users, dlq, export, compliance, notifier, notify):
    main.add_command(command)

if __name__ == "__main__":  # pragma: no cover
    main()
