"""Vendor knowledge for the jobs: the platform files, read by the one loader that Ansible uses too.

The platform files and their loader live in DeviceVault's Ansible collection
(``playbooks/collections/ansible_collections/devicevault/network/``: ``platforms/<name>.yml``, schema in
``platforms/README.md`` there; loader ``plugins/plugin_utils/platform_file.py``), so the collection is
self-contained and the collect action and the ``cli`` cliconf/terminal plugins read the same files through
the same code. Where the built-in files are, which file a host uses (``devicevault_platform``, else
``ansible_network_os``), the search path (``$DEVICEVAULT_PLATFORMS_DIR`` before the built-in directory) and
the command order (startup last) are written there once; this module only brings that loader into
DeviceVault's processes.

How: the loader is loaded **by file path** with ``importlib`` (module name :data:`LOADER_MODULE`), from
``jobs.settings.COLLECTIONS_DIR``; ``sys.path`` is left alone. Importing it as
``ansible_collections.devicevault...`` would put ``playbooks/collections`` into the ``ansible_collections``
namespace package that the ``ansible`` package also fills, and would break once Ansible's own collection
finder is installed in the same process (it then answers every ``ansible_collections`` import from its
configured paths). The lab (``lab/``) reads platforms through this module too.

    python -m jobs.collect.platforms list
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from jobs.settings import COLLECTIONS_DIR

#: where the collection's shared Python lives, relative to the collections directory
PLUGIN_UTILS = Path("ansible_collections/devicevault/network/plugins/plugin_utils")
#: where the loader is, relative to the collections directory
LOADER_PATH = PLUGIN_UTILS / "platform_file.py"
#: the name the loader gets in ``sys.modules`` (pickled Platform objects name it)
LOADER_MODULE = "devicevault_platform_file"


def collection_module(name: str) -> ModuleType:
    """``plugin_utils/<name>.py`` of DeviceVault's collection, loaded by file path as
    ``devicevault_<name>`` (by path, so it works before, or without, Ansible's collection loader in this process)."""
    module_name = f"devicevault_{name}"
    module = sys.modules.get(module_name)
    if module is not None:
        return module
    path = COLLECTIONS_DIR / PLUGIN_UTILS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a broken installation
        raise ImportError(f"cannot load {path} of DeviceVault's collection")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # before exec: dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


loader = collection_module("platform_file")

Platform = loader.Platform
Command = loader.Command
Rewrite = loader.Rewrite
PlatformError = loader.PlatformError
PLATFORMS_DIR_ENV = loader.PLATFORMS_DIR_ENV
PLATFORM_VAR = loader.PLATFORM_VAR
#: the built-in platform files (the one place that says where they are is the loader)
BUILTIN_DIR = Path(loader.BUILTIN_DIR)
platform_name = loader.platform_name
search_dirs = loader.search_dirs
load_platform_file = loader.load_file


def platform_key(name_or_network_os: str) -> str:
    """``cisco.ios.ios`` -> ``ios``, ``asa`` -> ``asa``: a platform name, or a bare ``ansible_network_os``."""
    return platform_name(None, name_or_network_os)


def all_platforms(directory: Path | str | None = None) -> dict[str, Platform]:
    """Every platform by name: ``directory`` (default ``$DEVICEVAULT_PLATFORMS_DIR``) over the built-in ones."""
    return loader.all_platforms(str(directory) if directory else None)


def get_platform(name_or_network_os: str, directory: Path | str | None = None) -> Platform | None:
    """The platform for a platform name (an inventory host's ``platform``) or an ``ansible_network_os``
    value, or ``None`` if there is no file for it; :class:`PlatformError` if its file is malformed."""
    name = platform_key(name_or_network_os or "")
    return loader.get(name, str(directory) if directory else None) if name else None


def _main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m jobs.collect.platforms")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="every platform file and its commands")
    ap.parse_args(argv)
    for name, p in sorted(all_platforms().items()):
        print(f"{name:<12} {p.network_os:<34} {' | '.join(p.command_lines)}")
    print(f"(from {', '.join(search_dirs())})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
