"""Vendor knowledge, loaded from one small data file per network OS in ``playbooks/platforms/<name>.yml``.

A platform file holds the commands to run, the volatile lines to drop (``noise``), what a complete
configuration looks like (``complete``) and the device's error text (``errors``). No regular expression
about a vendor lives in Python code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from .settings import PLATFORMS_DIR


class PlatformError(ValueError):
    """A platform data file is missing or malformed (the message names the file)."""


@dataclass(frozen=True)
class Platform:
    name: str
    network_os: str
    commands: tuple[str, ...]
    noise: tuple[re.Pattern[str], ...] = ()
    complete: tuple[re.Pattern[str], ...] = ()
    errors: tuple[re.Pattern[str], ...] = ()
    source: Path = field(default=Path(), compare=False)


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


def load_platform_file(path: Path) -> Platform:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PlatformError(f"{path}: cannot read platform file: {exc}") from exc
    if not isinstance(data, dict) or not data.get("commands"):
        raise PlatformError(f"{path}: a platform file needs 'name', 'network_os' and a list of 'commands'")
    return Platform(
        name=str(data.get("name") or path.stem),
        network_os=str(data.get("network_os", "")),
        commands=tuple(str(c) for c in data["commands"]),
        noise=_compile(path, "noise", data.get("noise"), 0),
        complete=_compile(path, "complete", data.get("complete"), re.MULTILINE),
        errors=_compile(path, "errors", data.get("errors"), re.MULTILINE),
        source=path,
    )


@lru_cache(maxsize=None)
def _load_dir(directory: str) -> dict[str, Platform]:
    platforms = {}
    for path in sorted(Path(directory).glob("*.yml")):
        platform = load_platform_file(path)
        platforms[path.stem] = platform
    return platforms


def all_platforms(directory: Path = PLATFORMS_DIR) -> dict[str, Platform]:
    return dict(_load_dir(str(directory)))


def get_platform(network_os: str, directory: Path = PLATFORMS_DIR) -> Platform | None:
    """The platform for an ``ansible_network_os`` value, or ``None`` if DeviceVault has no file for it."""
    return _load_dir(str(directory)).get(platform_key(network_os or ""))
