"""``devicevault notifier`` (the process that sends notifications) and ``devicevault notify`` (try a rule, list
the deliveries that fail, queue dead ones again). The rules are in ``notifications.yml`` (``jobs/notify/rules.py``)."""

from __future__ import annotations

import json
import signal

import click

from .common import Fail, daemon_logging, guard, index_sessions, load_settings, redis_client, storage_layout, table


@click.command()
@click.option("--name", help="Consumer name in the group (default: host-pid).")
@click.option("--idle-exit", type=float, help="Exit after this many seconds without messages.")
@click.option("--claim-idle", default=30.0, show_default=True,
              help="Take over other consumers' messages pending this long (s); also how often a version whose "
                   "text has not landed in storage yet is tried again.")
@click.option("--max-deliveries", type=int, default=5, show_default=True, envvar="DEVICEVAULT_STREAM_MAX_DELIVERIES",
              help="Tries before a message that keeps failing moves to the dead-letter stream.")
@guard
def notifier(name, idle_exit, claim_idle, max_deliveries) -> None:
    """Send notifications: subscribe to DeviceVault's events (consumer group 'notifier') and deliver them by
    the rules of notifications.yml (DEVICEVAULT_NOTIFICATIONS)."""
    from jobs.notify.notifier import Notifier, Pump, RulesFile
    from jobs.notify.rules import rules_path

    settings = load_settings()
    rules = RulesFile(rules_path(settings))  # a broken file: one line naming it (guard), before anything starts
    redis = redis_client(settings, blocking=True)
    redis.ping()
    daemon_logging(settings)
    if rules.rules.path is None:
        click.echo(f"notifier: no rules file at {rules.path} yet: nothing is sent until it exists", err=True)
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    layout = storage_layout(settings)
    consumer = Notifier(redis, index_sessions(settings), layout.open, rules, name=name,
                        claim_idle_ms=int(claim_idle * 1000), max_deliveries=max_deliveries)
    pump = Pump(redis_client(settings, blocking=True), rules)
    thread = pump.start(lambda: bool(stopping))
    try:
        consumer.run(stop=lambda: bool(stopping), idle_exit=idle_exit)
    except KeyboardInterrupt:
        pass
    stopping.append(1)
    thread.join(timeout=30)
    click.echo(f"notifier {consumer.name}: {consumer.routed} delivery(ies) queued, {pump.sent} sent, "
               f"{pump.failures} failed tries", err=True)


@click.group()
def notify() -> None:
    """Notification rules (notifications.yml): send a sample, list failing deliveries, queue dead ones again."""


@notify.command("test")
@click.argument("rule")
@guard
def notify_test(rule) -> None:
    """Send a sample notification to every channel of RULE now (not through the queue); exit 1 if one fails."""
    from jobs.notify.channels import open_channel
    from jobs.notify.events import Event, now_iso
    from jobs.notify.rules import EventKind, load_rules, rules_path

    settings = load_settings()
    rules = load_rules(rules_path(settings))
    if rule not in rules.rules:
        known = ", ".join(sorted(rules.rules)) or "none"
        raise Fail(f"{rules.path or rules_path(settings)}: no rule {rule!r} (rules: {known})")
    chosen = rules.rules[rule]
    kind = EventKind.VERSION if EventKind.VERSION in chosen.events else sorted(chosen.events)[0]
    sample = Event(id=f"test:{now_iso()}", kind=kind, title=f"sample-device: DeviceVault test of rule {rule}",
                   text=f"A sample notification sent by 'devicevault notify test {rule}'.", device="sample-device",
                   diff="--- sample-device v1\n+++ sample-device v2\n@@ -1 +1 @@\n-hostname old\n+hostname new\n",
                   at=now_iso(), data={"sample": True})
    failed = 0
    for name in chosen.channels:
        try:
            open_channel(rules.channels[name]).send(f"{sample.id}|{rule}|{name}", rule, [sample.as_dict()])
            click.echo(f"{name}: sent")
        except Exception as exc:  # noqa: BLE001 - every channel is tried and reported
            failed += 1
            click.echo(f"{name}: failed: {rules.mask(str(exc))}", err=True)
    if failed:
        raise SystemExit(1)


@notify.command("failures")
@click.option("--json", "as_json", is_flag=True)
@guard
def notify_failures(as_json) -> None:
    """Deliveries that failed: retrying, and dead (failed max_tries times)."""
    from jobs.notify.queue import summary

    data = summary(redis_client(load_settings()))
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"queued {data['queued']}, retrying {data['retrying']}, dead {data['dead']}")
    table(data["failures"], ["status", "rule", "channel", "tries", "error", "key"])


@notify.command("retry")
@click.argument("keys", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every dead delivery.")
@guard
def notify_retry(keys, all_) -> None:
    """Queue dead deliveries (KEY as 'notify failures' shows it, or --all) again, once their receiver is fixed."""
    from jobs.notify.queue import dead_keys, retry

    if bool(keys) == all_:
        raise Fail("give delivery keys or --all")
    redis = redis_client(load_settings())
    chosen = dead_keys(redis) if all_ else list(keys)
    missing = [key for key in chosen if not retry(redis, key)]
    click.echo(f"{len(chosen) - len(missing)} delivery(ies) queued again")
    if missing:
        raise Fail(f"not a dead delivery: {', '.join(missing)}")
