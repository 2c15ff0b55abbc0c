"""The compliance rules file and what one rule says of one configuration.

The file (``DEVICEVAULT_COMPLIANCE_RULES``, default ``$DEVICEVAULT_HOME/compliance.yml``; none: no rules)::

    rules:
      - name: password-encryption            # unique; what results and events name
        description: passwords are stored encrypted   # optional
        groups: [ios]                        # optional: inventory groups (any of them; the device's storage
                                             # group too), platforms (platform file names) and devices
        platforms: [ios]                     # (fnmatch globs); a rule with none of the three covers every device
        devices: ["ams-*"]
        must_contain:                        # each entry must be present: a line (compared without its
          - service password-encryption      # indentation) or {regex: RE2 pattern} searched in each line
        must_not_contain:                    # no line may match any entry
          - regex: '^ip http server'
      - name: access-ports-shut-unless-described
        section: '^interface GigabitEthernet'   # optional: an RE2 pattern of a section's first line; the
        must_contain: [{regex: '^(description|shutdown)'}]   # entries are checked in each such section
                                             # (its lines at any depth below it); no such section: nothing to check

Sections are the configuration's own (indented children and Junos ``{`` blocks), told by the one rule of
:func:`jobs.diffs.section_of`, the same that names a diff's hunks. Rules are checked against the masked view
of a version (what search and diffs show), so a rule never sees, and a result never holds, a secret.

Patterns are RE2 (``google-re2``, as the portal's search): linear in the text, so no rule can pin the process
checking every new version. A file that cannot be used raises :class:`RulesFileError`: one line naming the file
and the cause.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from jobs.diffs import parent_indexes, section_label
from jobs.errors import BackupError
from jobs.patterns import PatternError, compile_re2

_KEYS = {"name", "description", "groups", "platforms", "devices", "section", "must_contain", "must_not_contain"}


class ComplianceError(BackupError):
    """Base of the compliance errors."""

    kind = "compliance"


class RulesFileError(ComplianceError, ValueError):
    """The rules file cannot be used; the message names the file and the cause, in one line."""


@dataclass(frozen=True)
class Entry:
    """One line a rule asks for or forbids: literally (compared without indentation) or an RE2 pattern."""

    text: str
    regex: Any = None  # compiled RE2 pattern, or None for a literal line

    def matches(self, stripped: str) -> bool:
        return self.regex.search(stripped) is not None if self.regex is not None else stripped == self.text

    @property
    def label(self) -> str:
        return f"/{self.text}/" if self.regex is not None else self.text


@dataclass(frozen=True)
class Offence:
    """What breaks a rule: a ``missing`` entry or a ``forbidden`` line, in ``section`` ("" = the whole
    configuration)."""

    line: str
    problem: str  # "missing" | "forbidden"
    section: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"line": self.line, "problem": self.problem, "section": self.section}

    def text(self) -> str:
        """One line: ``interface Gi1/0/3: shutdown`` / ``service password-encryption``."""
        return f"{self.section}: {self.line}" if self.section else self.line


@dataclass(frozen=True)
class Rule:
    name: str
    must_contain: tuple[Entry, ...] = ()
    must_not_contain: tuple[Entry, ...] = ()
    section: Any = None  # compiled RE2 pattern of a section's first line, or None
    section_text: str = ""
    groups: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    description: str = ""

    def covers(self, device: str, groups: Iterable[str], platform: str) -> bool:
        """Whether the rule applies to ``device`` (in inventory ``groups``, of ``platform``): every selector
        given must match; a rule without selectors covers every device."""
        if self.groups and not set(self.groups) & set(groups):
            return False
        if self.platforms and platform not in self.platforms and platform.rsplit(".", 1)[-1] not in self.platforms:
            return False
        if self.devices and not any(fnmatchcase(device, pattern) for pattern in self.devices):
            return False
        return True

    def check(self, text: str) -> list[Offence]:
        """What in ``text`` (a masked configuration) breaks the rule; [] when it complies."""
        lines = text.splitlines()
        if self.section is None:
            return _check_block(self, [line.strip() for line in lines], "")
        offences: list[Offence] = []
        blocks: dict[int, tuple[str, list[str]]] = {}  # header line index -> (label, stripped lines below it)
        parents = parent_indexes(lines)
        for index, line in enumerate(lines):
            stripped = line.strip()
            if self.section.search(stripped) is not None and _opens_section(lines, index):
                blocks[index] = (section_label([lines[j].strip() for j in parents[index]] + [stripped]), [])
            for parent in parents[index]:
                if parent in blocks:
                    blocks[parent][1].append(stripped)
        for label, body in blocks.values():
            offences += _check_block(self, body, label)
        return offences


def _opens_section(lines: Sequence[str], index: int) -> bool:
    """A line with children (the next non-blank line is indented deeper), or a Junos ``... {`` line."""
    line = lines[index]
    if line.rstrip().endswith("{"):
        return True
    level = len(line) - len(line.lstrip(" \t"))
    for following in lines[index + 1:index + 3]:
        if following.strip():
            return len(following) - len(following.lstrip(" \t")) > level
    return False


def _check_block(rule: Rule, stripped: list[str], section: str) -> list[Offence]:
    offences = [Offence(entry.label, "missing", section) for entry in rule.must_contain
                if not any(entry.matches(line) for line in stripped)]
    if rule.must_not_contain:
        offences += [Offence(line, "forbidden", section) for line in stripped
                     if line and any(entry.matches(line) for entry in rule.must_not_contain)]
    return offences


@dataclass(frozen=True)
class RuleSet:
    """The rules of one file (``path`` None: no file, no rules); ``digest`` tells one content from another."""

    rules: tuple[Rule, ...] = ()
    path: Path | None = None
    digest: str = ""
    names: tuple[str, ...] = field(default=())

    def covering(self, device: str, groups: Iterable[str], platform: str) -> list[Rule]:
        groups = set(groups)
        return [rule for rule in self.rules if rule.covers(device, groups, platform)]


def _compile(pattern: Any, where: str) -> Any:
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"{where}: a pattern must be a non-empty string, not {pattern!r}")
    try:
        return compile_re2(pattern)
    except PatternError as exc:
        raise ValueError(f"{where}: {exc} (RE2 syntax: no backreferences or lookaround)") from None


def _entries(value: Any, where: str) -> tuple[Entry, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list):
        raise ValueError(f"{where} must be a list of lines or {{regex: PATTERN}}, not {type(value).__name__}")
    found = []
    for item in value:
        if isinstance(item, dict) and set(item) == {"regex"}:
            found.append(Entry(str(item["regex"]), _compile(item["regex"], where)))
        elif isinstance(item, (str, int, float)) and str(item).strip():
            found.append(Entry(str(item).strip()))
        else:
            raise ValueError(f"{where}: {item!r} is neither a line nor {{regex: PATTERN}}")
    return tuple(found)


def _names(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise ValueError(f"{where} must be a list of names")
    return tuple(str(v) for v in value)


def parse_rule(raw: Any, number: int) -> Rule:
    """One rule of the file (``number``: its position, from 1, for messages). Raises ValueError."""
    if not isinstance(raw, dict):
        raise ValueError(f"rule {number} must be a mapping with a name, not {type(raw).__name__}")
    name = str(raw.get("name") or "").strip()
    where = f"rule {number} ({name!r})" if name else f"rule {number}"
    if not name:
        raise ValueError(f"{where} has no name")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})")
    must = _entries(raw.get("must_contain"), f"{where} must_contain")
    must_not = _entries(raw.get("must_not_contain"), f"{where} must_not_contain")
    if not must and not must_not:
        raise ValueError(f"{where} says nothing: give must_contain and/or must_not_contain")
    section = raw.get("section")
    return Rule(
        name=name, must_contain=must, must_not_contain=must_not,
        section=_compile(section, f"{where} section") if section is not None else None,
        section_text=str(section or ""),
        groups=_names(raw.get("groups"), f"{where} groups"),
        platforms=_names(raw.get("platforms"), f"{where} platforms"),
        devices=_names(raw.get("devices"), f"{where} devices"),
        description=str(raw.get("description") or ""),
    )


def parse_rules(text: str, path: Path | None = None) -> RuleSet:
    """The rules in ``text`` (the file's content). Raises :class:`RulesFileError` naming ``path``."""
    import hashlib

    label = str(path) if path is not None else "the compliance rules"
    try:
        document = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RulesFileError(f"compliance rules file {label}: not valid YAML{at}: {problem}") from None
    document = document or {}
    if not isinstance(document, dict) or not isinstance(document.get("rules", []), list):
        raise RulesFileError(f"compliance rules file {label}: must be a mapping with a list under 'rules'")
    rules: list[Rule] = []
    try:
        for number, raw in enumerate(document.get("rules") or [], start=1):
            rule = parse_rule(raw, number)
            if any(r.name == rule.name for r in rules):
                raise ValueError(f"rule {number}: the name {rule.name!r} is used twice")
            rules.append(rule)
    except ValueError as exc:
        raise RulesFileError(f"compliance rules file {label}: {exc}") from None
    return RuleSet(tuple(rules), path, hashlib.sha256(text.encode()).hexdigest(), tuple(r.name for r in rules))


def load_rules(path: Path | None) -> RuleSet:
    """The rules of the file at ``path``; no rules when it is None or does not exist. Raises
    :class:`RulesFileError`."""
    if path is None or not Path(path).exists():
        return RuleSet(path=path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesFileError(f"compliance rules file {path}: cannot be read: {exc}") from None
    return parse_rules(text, Path(path))
