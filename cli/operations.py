"""Running DeviceVault: ``devicevault up`` (everything on one machine), ``status`` and ``hygiene``."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time

import click

from jobs.settings import Settings

from .common import guard, table

log = logging.getLogger("devicevault.up")


@click.command()
@click.option("--json", "as_json", is_flag=True)
@guard
def status(as_json) -> None:
    """Devices per status, queues and their depth, workers and what they run, stream lag, dead letters, stale
    and unsaved devices, last runs, compliance, notification deliveries failing or dead."""
    from jobs.ops.status import gather_status

    data = gather_status(Settings.load())
    for warning in data["warnings"]:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    for row in data["streams"]:
        if isinstance(row.get("consumers"), list):
            row["consumers"] = ", ".join(f"{c['name']}({c['pending']})" for c in row["consumers"]) or "-"
    click.echo("== devices (each counted under every status it has; storage.index.health, as on the portal): "
               + ", ".join(f"{n} {word}" for word, n in data["devices"].items()))
    for title, key, columns in (
        ("queues", "queues", ["queue", "queued", "started", "scheduled", "deferred", "failed"]),
        ("workers", "workers", ["worker", "state", "queues", "job"]),
        ("streams (lag: entries not yet delivered to the group)", "streams",
         ["stream", "group", "length", "pending", "lag", "consumers", "dead_letters"]),
        ("stale devices (no successful backup within their allowed age)", "stale",
         ["device", "group", "last_success", "stale_since"]),
        ("unsaved devices (running configuration differs from startup)", "unsaved",
         ["device", "group", "platform", "unsaved_since"]),
        ("last runs", "runs", ["run_id", "created_at", "status", "selector", "requested_by", "total"]),
    ):
        click.echo(f"== {title}")
        table(data[key], columns)
    rules = data["compliance"]
    click.echo(f"== compliance: {rules['violating']} of {rules['checked']} device(s) checked break a rule"
               " (devicevault compliance lists them)")
    click.echo("== storage outbox (copies waiting for their target): "
               + (", ".join(f"{t} {n}" for t, n in data["outbox"].items()) or "none"))
    notes = data["notifications"]
    click.echo(f"== notifications (deliveries): {notes['queued']} queued, {notes['retrying']} failing and retried, "
               f"{notes['dead']} dead (failed every try)")
    if notes["failures"]:
        table(notes["failures"], ["status", "rule", "channel", "tries", "error"])


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--grace", default=60.0, show_default=True, help="Seconds a queued job may be missing from its queue.")
def hygiene(as_json, grace) -> None:
    """One maintenance pass now: lost/abandoned/orphaned jobs, stale devices, stream trimming (and, when due,
    storage retention, index retention and storage maintenance)."""
    from redis import Redis

    from jobs.ops.maintenance import run_maintenance

    settings = Settings.load()
    redis = Redis.from_url(settings.redis_url)
    redis.ping()  # Redis down: one line (cli.common), not one logged traceback per step
    report = run_maintenance(redis, settings, grace=grace)
    data = {
        "hygiene": [f.as_dict() for f in report["hygiene"]],
        "swept": report["swept"],
        "stale": [s.device for s in report["stale"]],
        "retired": report["retired"].retired if report.get("retired") else [],
        "returned": report["retired"].returned if report.get("retired") else [],
        "trimmed": report["trimmed"],
        "pruned": report["pruned"],
        "index_pruned": report["index_pruned"].as_dict() if report.get("index_pruned") else None,
        "maintained": report["maintained"],
        "errors": report["errors"],
    }
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        table(data["hygiene"], ["kind", "queue", "job_id", "action", "reason"])
        click.echo(f"stale devices: {len(data['stale'])}; trimmed: {data['trimmed'] or 'nothing'}")
        for path in data["swept"]:
            click.echo(f"removed the runner directory of a process that is gone: {path}")
        for name in data["retired"]:
            click.echo(f"retired (missing from the inventory for {settings.retire_after:g} h or more): {name}")
        for name in data["returned"]:
            click.echo(f"back in the inventory, no longer retired: {name}")
        if data["index_pruned"]:
            done = data["index_pruned"]
            click.echo(f"index retention ({done['days']:g} days): {done['results']} device result(s), {done['runs']} "
                       f"run(s) removed" + ("" if done["complete"] else "; more at the next pass"))
        for target, done in data["maintained"].items():
            click.echo(f"storage maintenance on {target}: {'ran' if done.get('ran') else done.get('skipped', 'nothing to do')}")
        for error in data["errors"]:
            click.echo(f"error: {error}", err=True)
    if report["errors"]:
        sys.exit(1)


@click.command()
@click.option("--workers", type=int, default=None,
              help="How many workers (each serves every queue); default DEVICEVAULT_WORKERS (3 per 2 CPUs).")
@click.option("--portal/--no-portal", default=True, show_default=True, help="Also run the Streamlit portal, when present.")
@click.option("--portal-port", default=8501, show_default=True)
@click.option("--portal-address", default="127.0.0.1", show_default=True,
              help="Address the portal listens on (0.0.0.0: every interface; put a TLS reverse proxy in front).")
def up(workers, portal, portal_port, portal_address) -> None:
    """Run everything a small installation needs on this machine: Redis (if none answers), worker(s), the
    scheduler, the index consumer, the notifier and the portal. Ctrl-C (or SIGTERM) stops them all cleanly."""
    from jobs.settings import PORTAL_APP

    from .services import Process, ensure_redis

    settings = Settings.load(workers=workers)
    from jobs.logs import configure_logging

    configure_logging(settings)
    logs = settings.home / "logs"
    started: list[tuple[str, Process]] = []
    redis_server = ensure_redis(settings, lambda line: click.echo(line, err=True))
    plan = [(f"worker-{i}", ["worker", "--name", f"{os.uname().nodename}-worker-{i}-{os.getpid()}"])
            for i in range(1, settings.workers + 1)]
    plan += [("scheduler", ["scheduler"]), ("consumer", ["consumer"]), ("notifier", ["notifier"])]
    if portal and PORTAL_APP.exists():
        plan.append(("portal", ["portal", "--port", str(portal_port), "--address", portal_address]))
    stopping: list[int] = []

    def stop(signum, _frame) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        for name, args in plan:
            started.append((name, Process(args, logs / f"{name}.log", with_parent=True).start()))
            log.info("%s started (log %s)", name, logs / f"{name}.log")
        click.echo(f"devicevault up: {', '.join(n for n, _ in started)} running; logs in {logs}; Ctrl-C stops",
                   err=True)
        while not stopping:
            for name, proc in started:
                code = proc.popen.poll()
                if code is not None:
                    log.error("%s exited with %s; restarting it (log %s)", name, code, logs / f"{name}.log")
                    proc.start()
            time.sleep(1)
    finally:
        for name, proc in reversed(started):
            proc.stop()
            log.info("%s stopped", name)
        if redis_server is not None:
            redis_server.stop()
        click.echo("devicevault up: stopped", err=True)
