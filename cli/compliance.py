"""``devicevault compliance``: the devices that break a compliance rule, and the lines that do
(``jobs/compliance``: the rules file, the checks on every new version)."""

from __future__ import annotations

import json

import click

from .common import Fail, emit, guard, index_sessions, load_settings, redis_client


def _in_group(settings, group: str) -> set[str] | None:
    """Names of the devices in inventory group ``group`` (or whose storage group it is: the caller adds those)."""
    from jobs.collect.inventory import inventory_groups

    try:
        return {name for name, groups in inventory_groups(settings.inventory, settings).items() if group in groups}
    except Exception:  # noqa: BLE001 - the storage group still selects
        return None


@click.command("compliance")
@click.option("--group", "groups", multiple=True, help="Only devices of this inventory (or storage) group (repeatable).")
@click.option("--rule", "rules", multiple=True, help="Only this rule (repeatable).")
@click.option("--check", is_flag=True, help="Check every device's newest version against the rules now first.")
@click.option("--json", "as_json", is_flag=True)
@guard
def compliance(groups, rules, check, as_json) -> None:
    """Devices that break a compliance rule (DEVICEVAULT_COMPLIANCE_RULES, default
    $DEVICEVAULT_HOME/compliance.yml), each rule with the offending lines ("missing" or "forbidden", and the
    section they are in). Every new version is checked by the consumer; --check checks every device now.
    Exit status 1 when a device breaks a rule."""
    from storage.index.compliance import violations
    from storage.index.models import Device

    from jobs.compliance.checker import checker_for
    from jobs.compliance.rules import RulesFileError, load_rules

    settings = load_settings()
    try:
        ruleset = load_rules(settings.compliance_rules)
    except RulesFileError as exc:
        raise Fail(str(exc)) from None
    sessions = index_sessions(settings)
    if check:
        redis = redis_client(settings)
        report = checker_for(settings, redis, sessions).check()
        if not as_json:
            click.echo(f"checked {report.checked} device(s) against {len(ruleset.rules)} rule(s): "
                       f"{report.violating} break a rule, {report.announced} change(s) announced", err=True)
        for line in report.unreadable:
            click.echo(f"not checked: {line}", err=True)
    elif not ruleset.rules and not as_json:
        click.echo(f"no compliance rules ({settings.compliance_rules} does not exist)", err=True)
    devices = None
    if groups:
        from sqlalchemy import select

        devices = set()
        for group in groups:
            devices |= _in_group(settings, group) or set()
        with sessions() as session:
            devices |= set(session.scalars(select(Device.name).where(Device.group_name.in_(list(groups)))))
    with sessions() as session:
        rows = violations(session, devices=sorted(devices) if devices is not None else None, rules=list(rules))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        emit([{**r, "lines": "; ".join(_text(i) for i in r["lines"])} for r in rows],
             ["device", "rule", "since", "lines"], False)
    if rows:
        raise SystemExit(1)


def _text(item: dict) -> str:
    where = f"{item['section']}: " if item.get("section") else ""
    return f"{item['problem']}: {where}{item['line']}"
