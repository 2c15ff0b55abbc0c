# DeviceVault: find and read a platform file (playbooks/platforms/<name>.yml; schema in its README.md).
# Controller-side code shared by the collect action and the cliconf plugin.
from __future__ import annotations

import os
import re

try:
    import yaml
except ImportError:  # pragma: no cover - PyYAML comes with ansible-core
    yaml = None

#: playbooks/collections/ansible_collections/devicevault/network/plugins/plugin_utils/ -> playbooks/platforms
BUILTIN_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), *([os.pardir] * 6), "platforms"))
NAME_RE = re.compile(r"^[\w.\-]+$")


class PlatformFileError(ValueError):
    """A platform that has no file, or a file that cannot be read (the message names it and the cause)."""


def search_dirs(extra_dir=None):
    """Where platform files are looked for: ``extra_dir`` (a site's own platforms) first, then the built-in."""
    return ([extra_dir] if extra_dir else []) + [BUILTIN_DIR]


def find(name, extra_dir=None):
    """The path of platform ``name``'s file."""
    if not name or not NAME_RE.match(name):
        raise PlatformFileError("bad platform name %r (a platform file's name without .yml)" % (name,))
    dirs = search_dirs(extra_dir)
    for directory in dirs:
        path = os.path.join(directory, name + ".yml")
        if os.path.isfile(path):
            return path
    raise PlatformFileError("no platform file %s.yml in %s" % (name, ", ".join(dirs)))


def load(path):
    """The platform file at ``path`` as a mapping."""
    if yaml is None:  # pragma: no cover
        raise PlatformFileError("reading platform files needs PyYAML")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise PlatformFileError("%s: cannot read platform file: %s" % (path, exc))
    if not isinstance(data, dict):
        raise PlatformFileError("%s: not a platform file (a YAML mapping)" % path)
    return data


def collect_commands(data):
    """Every command a backup sends, in order: the platform's ``commands``, then ``startup`` if it has one."""
    commands = list(data.get("commands") or [])
    if data.get("startup"):
        commands.append(data["startup"])
    return commands
