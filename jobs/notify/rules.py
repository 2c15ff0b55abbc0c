"""The rules file, ``notifications.yml``: which events go to which channel, for which devices, and when.

The file is ``DEVICEVAULT_NOTIFICATIONS`` (default ``<DEVICEVAULT_HOME>/notifications.yml``); without it nothing
is sent. Shape (every key but ``channels`` and ``rules`` optional)::

    channels:
      hook:     {type: webhook, url: https://hooks.example.com/dv, secret_env: DV_HOOK_SECRET}
      mail:     {type: email, host: smtp.example.com, port: 587, starttls: true, username: dv,
                 password_env: DV_SMTP_PASSWORD, from: dv@example.com, to: [neteng@example.com], digest: false}
      chat:     {type: slack, url_env: DV_SLACK_URL}
    rules:
      - name: core-changes
        events: [version, failed, recovered]
        groups: [core]            # and/or platforms: [...], devices: [r1, "edge-*"] (shell patterns)
        channels: [hook, mail]
        quiet_hours: "22:00-06:00" # deliveries wait until the quiet hours end
        timezone: Europe/Amsterdam # of the quiet hours (an IANA name; default UTC), summer time included
        rate_limit: 30/hour        # beyond it, deliveries wait for the next hour

Secrets never sit in the file: a channel names the environment variable holding them (``secret_env``,
``password_env``, ``url_env``); their values are masked in every error and log line (:meth:`Rules.mask`).
A file DeviceVault cannot use raises :class:`RulesError`, one line naming the file and the cause.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from jobs.notify.base import ChannelConfig, RulesError
from jobs.notify.channels import channel_types
from jobs.redact import Redactor


class EventKind(str, Enum):
    """What a rule can ask for (``events:``)."""

    VERSION = "version"  # a new version, with the masked unified diff against the previous one
    FAILED = "failed"  # a device's backup failed (once per incident, with the error)
    RECOVERED = "recovered"  # a failing device was backed up again
    STALE = "stale"  # no successful backup within its allowed age (jobs.ops.freshness)
    UNSAVED = "unsaved"  # running configuration differs from startup (storage.index.health)
    RUN_FINISHED = "run_finished"  # every device of a run has a result (summary)
    DEAD_LETTER = "dead_letter"  # a message moved to a dead-letter stream
    OUTBOX_STUCK = "outbox_stuck"  # storage copies pending in the outbox for too long
    COMPLIANCE = "compliance"  # a device newly breaks (or no longer breaks) a compliance rule

    def __str__(self) -> str:
        return self.value


#: events about one device: the rules' groups/platforms/devices filters apply to them (the others, about
#: the installation, go to every rule that lists them)
DEVICE_EVENTS = frozenset({EventKind.VERSION, EventKind.FAILED, EventKind.RECOVERED, EventKind.STALE,
                           EventKind.UNSAVED, EventKind.COMPLIANCE})

DEFAULT_FILE = "notifications.yml"
_RATE = re.compile(r"\A\s*(\d+)\s*/\s*(second|minute|hour|day|s|min|h|d)\s*\Z")
_PERIODS = {"second": 1, "s": 1, "minute": 60, "min": 60, "hour": 3600, "h": 3600, "day": 86400, "d": 86400}
_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


@dataclass(frozen=True)
class Rule:
    name: str
    events: frozenset[EventKind]
    channels: tuple[str, ...]
    groups: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    quiet_hours: tuple[time, time] | None = None
    timezone: str = "UTC"  # the quiet hours' clock (IANA name)
    rate_limit: tuple[int, int] | None = None  # (count, period in seconds)
    first_versions: bool = False  # notify a device's first version too (an initial import: off)

    def matches(self, kind: EventKind, device: str = "", group: str = "", platform: str = "") -> bool:
        if kind not in self.events:
            return False
        if kind not in DEVICE_EVENTS:
            return True
        if self.groups and group not in self.groups:
            return False
        if self.platforms and platform not in self.platforms:
            return False
        return not self.devices or any(fnmatch.fnmatchcase(device, p) for p in self.devices)

    def quiet_until(self, now: datetime) -> datetime | None:
        """The end of the quiet hours ``now`` falls in (on the rule's ``timezone`` clock), None outside them."""
        if self.quiet_hours is None:
            return None
        start, end = self.quiet_hours
        zone = ZoneInfo(self.timezone)
        now = now.astimezone(zone)
        clock = now.timetz().replace(tzinfo=None)
        inside = start <= clock < end if start < end else (clock >= start or clock < end)
        if not inside:
            return None
        for day in (now.date(), now.date() + timedelta(days=1)):
            until = datetime.combine(day, end, tzinfo=zone)  # the wall clock's end, whatever its UTC offset
            if until > now:
                return until.astimezone(timezone.utc)
        return None


@dataclass
class Rules:
    """The parsed file. ``sweep_interval``: seconds between the notifier's looks at the index (stale,
    unsaved, stuck copies) and the dead-letter streams; ``outbox_stuck_after``: seconds a copy may wait in the
    outbox before it counts as stuck; ``digest_delay``: seconds after a run's end before its digest mail goes."""

    path: Path | None
    channels: dict[str, ChannelConfig] = field(default_factory=dict)
    rules: dict[str, Rule] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    sweep_interval: float = 60.0
    outbox_stuck_after: float = 1800.0
    digest_delay: float = 60.0

    def matching(self, kind: EventKind, device: str = "", group: str = "", platform: str = "") -> list[Rule]:
        return [r for r in self.rules.values() if r.matches(kind, device, group, platform)]

    def mask(self, text: str) -> str:
        """``text`` with every secret of the file (and generic ``password=...``/URL passwords) masked."""
        return Redactor(self.secrets).redact(text)


def rules_path(settings) -> Path:
    return settings.notifications_file or settings.home / DEFAULT_FILE


def _fail(path: Path | None, cause: str) -> RulesError:
    return RulesError(f"{path or 'notification rules'}: {cause}")


def _list(path, where: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise _fail(path, f"{where} must be a list of names")
    return tuple(str(v) for v in value)


def _clock(path, where: str, text: str) -> time:
    try:
        hours, minutes = text.strip().split(":")
        return time(int(hours) % 24 if int(hours) == 24 else int(hours), int(minutes))
    except ValueError:
        raise _fail(path, f"{where}: {text!r} is not a time of day (HH:MM)") from None


def _number(path, where: str, value: Any, kind: type = float, minimum: float = 0) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number < minimum:
        raise _fail(path, f"{where} must be a number of at least {minimum}, not {value!r}")
    return number


def _secret(path, where: str, options: dict, key: str, env: Mapping[str, str], secrets: list[str],
            *, required: bool = False) -> str:
    """The value of the environment variable ``options[key + '_env']`` (a secret), or ``options[key]``."""
    name = options.pop(f"{key}_env", None)
    if name is not None:
        value = env.get(str(name), "")
        if not value:
            raise _fail(path, f"{where}: the environment variable {name} ({key}_env) is not set")
        secrets.append(value)
        return value
    value = options.get(key)
    if required and not value:
        raise _fail(path, f"{where} needs {key} (or {key}_env naming an environment variable)")
    return str(value or "")


def _channel(path, name: str, raw: Any, env: Mapping[str, str], secrets: list[str]) -> ChannelConfig:
    where = f"channel {name!r}"
    if not _NAME.match(name):
        raise _fail(path, f"{where}: a channel name is letters, digits, '.', '_' and '-'")
    if not isinstance(raw, dict):
        raise _fail(path, f"{where} must be a mapping (type: webhook|email|slack|teams, ...)")
    options = dict(raw)
    kind = str(options.pop("type", ""))
    if kind not in channel_types():
        raise _fail(path, f"{where}: unknown type {kind!r} (one of {', '.join(sorted(channel_types()))})")
    policy = {
        "max_tries": _number(path, f"{where}: max_tries", options.pop("max_tries", 8), int, 1),
        "retry_base": _number(path, f"{where}: retry_base", options.pop("retry_base", 30.0)),
        "retry_max": _number(path, f"{where}: retry_max", options.pop("retry_max", 3600.0)),
    }
    if kind == "email":
        options["password"] = _secret(path, where, options, "password", env, secrets)
        if not options.get("host"):
            raise _fail(path, f"{where} needs host")
        if not options.get("from") or not _list(path, f"{where}: to", options.get("to")):
            raise _fail(path, f"{where} needs from and to")
        options["to"] = list(_list(path, f"{where}: to", options.get("to")))
        options["port"] = _number(path, f"{where}: port", options.get("port", 587), int, 1)
    else:
        options["url"] = _secret(path, where, options, "url", env, secrets, required=True)
        if kind != "webhook":  # a Slack/Teams URL is its own credential
            secrets.append(options["url"])
        if kind == "webhook":
            options["secret"] = _secret(path, where, options, "secret", env, secrets)
    return ChannelConfig(name, kind, options, **policy)


def _rule(path, index: int, raw: Any, channels: dict[str, ChannelConfig]) -> Rule:
    if not isinstance(raw, dict):
        raise _fail(path, f"rule {index + 1} must be a mapping (name, events, channels, ...)")
    name = str(raw.get("name") or "")
    where = f"rule {name!r}" if name else f"rule {index + 1}"
    if not _NAME.match(name):
        raise _fail(path, f"{where} needs a name (letters, digits, '.', '_' and '-')")
    unknown = set(raw) - {"name", "events", "channels", "groups", "platforms", "devices", "quiet_hours",
                          "timezone", "rate_limit", "first_versions"}
    if unknown:
        raise _fail(path, f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    events = []
    for event in _list(path, f"{where}: events", raw.get("events")):
        try:
            events.append(EventKind(event))
        except ValueError:
            raise _fail(path, f"{where}: unknown event {event!r} (one of {', '.join(e.value for e in EventKind)})") from None
    if not events:
        raise _fail(path, f"{where} lists no events")
    names = _list(path, f"{where}: channels", raw.get("channels"))
    if not names:
        raise _fail(path, f"{where} names no channel")
    for channel in names:
        if channel not in channels:
            raise _fail(path, f"{where}: no channel {channel!r} in channels")
    quiet = None
    if raw.get("quiet_hours"):
        start, sep, end = str(raw["quiet_hours"]).partition("-")
        if not sep:
            raise _fail(path, f"{where}: quiet_hours must be HH:MM-HH:MM, not {raw['quiet_hours']!r}")
        quiet = (_clock(path, f"{where}: quiet_hours", start), _clock(path, f"{where}: quiet_hours", end))
    zone = str(raw.get("timezone") or "UTC")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise _fail(path, f"{where}: unknown timezone {zone!r} (an IANA name such as Europe/Amsterdam)") from None
    rate = None
    if raw.get("rate_limit"):
        m = _RATE.match(str(raw["rate_limit"]))
        if m is None or int(m[1]) < 1:
            raise _fail(path, f"{where}: rate_limit must be COUNT/second|minute|hour|day, not {raw['rate_limit']!r}")
        rate = (int(m[1]), _PERIODS[m[2]])
    return Rule(name=name, events=frozenset(events), channels=names,
                groups=_list(path, f"{where}: groups", raw.get("groups")),
                platforms=_list(path, f"{where}: platforms", raw.get("platforms")),
                devices=_list(path, f"{where}: devices", raw.get("devices")),
                quiet_hours=quiet, timezone=zone, rate_limit=rate, first_versions=bool(raw.get("first_versions", False)))


def parse_rules(text: str, path: Path | None = None, env: Mapping[str, str] | None = None) -> Rules:
    env = os.environ if env is None else env
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise _fail(path, f"not valid YAML: {where}{getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise _fail(path, "must be a mapping with channels: and rules:")
    unknown = set(data) - {"channels", "rules", "sweep_interval", "outbox_stuck_after", "digest_delay"}
    if unknown:
        raise _fail(path, f"unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    raw_channels = data.get("channels") or {}
    if not isinstance(raw_channels, dict):
        raise _fail(path, "channels must be a mapping of channel names")
    secrets: list[str] = []
    channels = {str(n): _channel(path, str(n), c, env, secrets) for n, c in raw_channels.items()}
    raw_rules = data.get("rules") or []
    if not isinstance(raw_rules, list):
        raise _fail(path, "rules must be a list")
    rules: dict[str, Rule] = {}
    for i, raw in enumerate(raw_rules):
        rule = _rule(path, i, raw, channels)
        if rule.name in rules:
            raise _fail(path, f"two rules are named {rule.name!r}")
        rules[rule.name] = rule
    return Rules(path, channels, rules, tuple(s for s in secrets if s),
                 sweep_interval=_number(path, "sweep_interval", data.get("sweep_interval", 60.0)),
                 outbox_stuck_after=_number(path, "outbox_stuck_after", data.get("outbox_stuck_after", 1800.0)),
                 digest_delay=_number(path, "digest_delay", data.get("digest_delay", 60.0)))


def load_rules(path: Path, env: Mapping[str, str] | None = None) -> Rules:
    """The rules of ``path``; no file: no rules (nothing is sent)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Rules(None)
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(path, f"cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_rules(text, path, env)
