"""Vendor knowledge, loaded from one small data file per network OS in ``playbooks/platforms/<name>.yml``.

The schema is documented in ``playbooks/platforms/README.md``: the commands to run (identity output kept
as comment lines, then the configuration), the optional startup command, volatile lines (``noise``) and
volatile parts of lines (``replace``), ``secrets``, who changed it (``changed_by``), what a complete
configuration looks like (``complete``) and the device's error text (``errors``). No regular expression
about a vendor lives in Python code.

``DEVICEVAULT_PLATFORMS_DIR`` names a directory searched before the built-in one, so a site can add a
platform (or override one) with a data file only.

    python -m jobs.collect.platforms list
    python -m jobs.collect.platforms golden ios [--write]     # normalise tests/golden/ios/raw/* (see the README)
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from jobs.settings import PLATFORMS_DIR

PLATFORMS_DIR_ENV = "DEVICEVAULT_PLATFORMS_DIR"
#: the inventory variable that picks a platform file when ``ansible_network_os`` cannot (our own plugin)
PLATFORM_VAR = "devicevault_platform"


class PlatformError(ValueError):
    """A platform data file is missing or malformed (the message names the file)."""


@dataclass(frozen=True)
class Command:
    command: str
    #: identity output (``show version``): stored as comment lines at the top, not part of the configuration
    comment: bool = False
    #: for comment output: only lines matching one of these are kept (empty = all, after noise)
    keep: tuple[re.Pattern[str], ...] = ()


@dataclass(frozen=True)
class Rewrite:
    pattern: re.Pattern[str]
    replacement: str


@dataclass(frozen=True)
class Platform:
    name: str
    network_os: str
    commands: tuple[Command, ...]
    startup: str = ""
    comment_prefix: str = "# "
    description: str = ""
    noise: tuple[re.Pattern[str], ...] = ()
    replace: tuple[Rewrite, ...] = ()
    secrets: tuple[re.Pattern[str], ...] = ()
    changed_by: tuple[re.Pattern[str], ...] = ()
    complete: tuple[re.Pattern[str], ...] = ()
    errors: tuple[re.Pattern[str], ...] = ()
    terminal: dict = field(default_factory=dict, compare=False, hash=False)
    source: Path = field(default=Path(), compare=False)

    @property
    def command_lines(self) -> tuple[str, ...]:
        """Every command the playbook sends, in order (the startup command last)."""
        return tuple(c.command for c in self.commands) + ((self.startup,) if self.startup else ())


def platform_key(network_os: str) -> str:
    """``cisco.ios.ios`` -> ``ios``: the file name of a platform is the last part of its network OS."""
    return network_os.rsplit(".", 1)[-1].strip()


def _compile(path: Path, key: str, values: object, flags: int) -> tuple[re.Pattern[str], ...]:
    if values is None:
        return ()
    if not isinstance(values, list):
        raise PlatformError(f"{path}: '{key}' must be a list of regular expressions")
    compiled = []
    for value in values:
        try:
            compiled.append(re.compile(str(value), flags))
        except re.error as exc:
            raise PlatformError(f"{path}: bad regular expression in '{key}': {value!r}: {exc}") from exc
    return tuple(compiled)


def _commands(path: Path, values: object) -> tuple[Command, ...]:
    if not isinstance(values, list) or not values:
        raise PlatformError(f"{path}: 'commands' must be a non-empty list")
    out = []
    for value in values:
        if isinstance(value, str):
            out.append(Command(value))
        elif isinstance(value, dict) and value.get("command"):
            out.append(Command(str(value["command"]), bool(value.get("comment", False)),
                               _compile(path, "keep", value.get("keep"), 0)))
        else:
            raise PlatformError(f"{path}: each command is a string or a mapping with 'command': {value!r}")
    if all(c.comment for c in out):
        raise PlatformError(f"{path}: at least one command must be the configuration (comment: false)")
    return tuple(out)


def _rewrites(path: Path, values: object) -> tuple[Rewrite, ...]:
    if values is None:
        return ()
    if not isinstance(values, list):
        raise PlatformError(f"{path}: 'replace' must be a list of {{pattern, with}} mappings")
    out = []
    for value in values:
        if not isinstance(value, dict) or "pattern" not in value or "with" not in value:
            raise PlatformError(f"{path}: each 'replace' entry needs 'pattern' and 'with': {value!r}")
        (pattern,) = _compile(path, "replace", [value["pattern"]], 0)
        out.append(Rewrite(pattern, str(value["with"])))
    return tuple(out)


def _named(path: Path, key: str, patterns: tuple[re.Pattern[str], ...], group: str) -> None:
    for pattern in patterns:
        if group not in pattern.groupindex and pattern.groups < 1:
            raise PlatformError(f"{path}: '{key}' pattern {pattern.pattern!r} needs a group named '{group}'")


def load_platform_file(path: Path) -> Platform:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PlatformError(f"{path}: cannot read platform file: {exc}") from exc
    if not isinstance(data, dict) or not data.get("commands"):
        raise PlatformError(f"{path}: a platform file needs 'name', 'network_os' and a list of 'commands'")
    terminal = data.get("terminal") or {}
    if not isinstance(terminal, dict):
        raise PlatformError(f"{path}: 'terminal' must be a mapping")
    platform = Platform(
        name=str(data.get("name") or path.stem),
        network_os=str(data.get("network_os", "")),
        description=str(data.get("description", "")),
        commands=_commands(path, data["commands"]),
        startup=str(data.get("startup") or ""),
        comment_prefix=str(data.get("comment_prefix", "# ")),
        noise=_compile(path, "noise", data.get("noise"), 0),
        replace=_rewrites(path, data.get("replace")),
        secrets=_compile(path, "secrets", data.get("secrets"), 0),
        changed_by=_compile(path, "changed_by", data.get("changed_by"), 0),
        complete=_compile(path, "complete", data.get("complete"), re.MULTILINE),
        errors=_compile(path, "errors", data.get("errors"), re.MULTILINE),
        terminal=terminal,
        source=path,
    )
    _named(path, "secrets", platform.secrets, "secret")
    _named(path, "changed_by", platform.changed_by, "user")
    return platform


def platform_dirs(directory: Path | None = None) -> list[Path]:
    """Where platform files are looked up, first match wins: ``$DEVICEVAULT_PLATFORMS_DIR``, built-in."""
    if directory is not None:
        return [Path(directory)]
    extra = os.environ.get(PLATFORMS_DIR_ENV)
    return ([Path(extra)] if extra else []) + [PLATFORMS_DIR]


@lru_cache(maxsize=None)
def _load_dir(directory: str) -> dict[str, Platform]:
    platforms = {}
    for path in sorted(Path(directory).glob("*.yml")):
        platforms[path.stem] = load_platform_file(path)
    return platforms


def all_platforms(directory: Path | None = None) -> dict[str, Platform]:
    found: dict[str, Platform] = {}
    for d in reversed(platform_dirs(directory)):
        found.update(_load_dir(str(d)))
    return found


def get_platform(name_or_network_os: str, directory: Path | None = None) -> Platform | None:
    """The platform for a ``devicevault_platform`` or ``ansible_network_os`` value, or ``None`` if there is
    no file for it."""
    key = platform_key(name_or_network_os or "")
    for d in platform_dirs(directory):
        platform = _load_dir(str(d)).get(key)
        if platform is not None:
            return platform
    return None


# --------------------------------------------------------------------------- command line
GOLDEN_DIR = Path(__file__).resolve().parents[2] / "tests" / "golden"


def golden_outputs(name: str, root: Path = GOLDEN_DIR) -> list[str]:
    """The raw device outputs of a platform's golden case, in command order."""
    files = sorted((root / name / "raw").glob("*.txt"))
    if not files:
        raise PlatformError(f"{root / name / 'raw'}: no raw output files (01-<command>.txt, ...)")
    return [f.read_bytes().decode("utf-8", errors="surrogateescape") for f in files]


def _main(argv: list[str]) -> int:
    import argparse

    from jobs.collect.normalize import normalize

    ap = argparse.ArgumentParser(prog="python -m jobs.collect.platforms")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="every platform file and its commands")
    g = sub.add_parser("golden", help="normalise tests/golden/<name>/raw/* and show or write expected.txt")
    g.add_argument("name")
    g.add_argument("--write", action="store_true")
    a = ap.parse_args(argv)
    if a.cmd == "list":
        for name, p in sorted(all_platforms().items()):
            print(f"{name:<12} {p.network_os:<34} {' | '.join(p.command_lines)}")
        return 0
    platform = get_platform(a.name)
    if platform is None:
        print(f"no platform file for {a.name!r}", file=sys.stderr)
        return 2
    result = normalize(f"golden-{a.name}", platform, golden_outputs(a.name))
    if a.write:
        (GOLDEN_DIR / a.name / "expected.txt").write_bytes(result.text.encode("utf-8", errors="surrogateescape"))
        print(f"wrote {GOLDEN_DIR / a.name / 'expected.txt'} (changed_by={result.changed_by!r}, unsaved={result.unsaved})")
    else:
        sys.stdout.write(result.text)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
