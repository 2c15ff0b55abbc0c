"""Read an Ansible inventory with ansible-core's own parser and pick hosts from it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from jobs.errors import InventoryError
from jobs.settings import parse_flag

#: groups that say what a host *is* rather than where it is; a host's storage group is its first other group
_IMPLICIT = {"all", "ungrouped"}
_SECRET_VARS = ("ansible_password", "ansible_ssh_pass", "ansible_become_password", "ansible_become_pass")


@dataclass(frozen=True)
class InventoryHost:
    name: str
    network_os: str
    address: str
    group: str
    groups: tuple[str, ...] = field(default=())
    #: ``devicevault_location``: the storage location (``jobs/deliver/locations.py``); "" = by group, else default
    location: str = ""
    #: ``devicevault_collector_group``: collected from queue ``collector.group.<name>`` ("" = ``collector``)
    collector_group: str = ""
    #: ``devicevault_max_age``: hours without a successful backup before the device is stale (0 = default)
    max_age: float = 0.0
    #: the platform file's name (``jobs/collect/platforms.py``): ``devicevault_platform``, else the last part
    #: of ``ansible_network_os``; "" when neither names one
    platform: str = ""
    #: ``devicevault_secrets``: mask (default), keep (encrypted targets only) or drop
    secrets_mode: str = "mask"
    #: ``devicevault_keep_raw``: also keep the device output exactly as read, on encrypted targets only
    keep_raw: bool = False
    #: login and enable passwords of the host, only to mask them wherever text leaves a process
    secrets: tuple[str, ...] = field(default=(), repr=False, compare=False)


def _platform_groups() -> set[str]:
    from jobs.collect.platforms import all_platforms

    return set(all_platforms())


def _platform_name(hv: dict) -> str:
    from jobs.collect.platforms import PLATFORM_VAR, platform_name

    return platform_name(hv.get(PLATFORM_VAR), hv.get("ansible_network_os"))


def load_inventory(path: Path | str) -> dict[str, InventoryHost]:
    """Every host of the inventory at ``path`` by name. Raises :class:`InventoryError` naming the file."""
    path = Path(path)
    if not path.exists():
        raise InventoryError(f"{path}: inventory not found")
    os.environ.setdefault("LC_ALL", "C.UTF-8")
    os.environ.setdefault("ANSIBLE_LOCAL_TEMP", "/tmp/devicevault-ansible-tmp")
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    loader = DataLoader()
    try:
        manager = InventoryManager(loader=loader, sources=[str(path)], parse=False)
        manager.parse_sources(cache=False)
    except AnsibleError as exc:
        raise InventoryError(f"{path}: cannot parse inventory: {exc}") from exc
    if not manager._sources or not manager.get_hosts():  # noqa: SLF001 - no public "parsed ok" flag
        raise InventoryError(f"{path}: no hosts found (malformed or empty inventory?)")
    from ansible.vars.manager import VariableManager

    variables = VariableManager(loader=loader, inventory=manager)
    platform_groups = _platform_groups()
    hosts = {}
    for host in manager.get_hosts():
        try:  # inventory vars plus group_vars/ and host_vars/ files, as a play would see them
            hv = variables.get_vars(host=host, include_hostvars=False)
        except AnsibleError as exc:
            raise InventoryError(f"{path}: cannot read variables of host {host.name!r}: {exc}") from exc
        groups = tuple(sorted(g.name for g in host.get_groups() if g.name not in _IMPLICIT))
        own_platform = _platform_name(hv)
        site_groups = [g for g in groups if g not in platform_groups and g != own_platform]
        hosts[host.name] = InventoryHost(
            name=host.name,
            network_os=str(hv.get("ansible_network_os") or ""),
            address=str(hv.get("ansible_host") or host.name),
            group=str(hv.get("devicevault_group") or (site_groups or list(groups) or ["ungrouped"])[0]),
            groups=groups,
            location=str(hv.get("devicevault_location") or ""),
            collector_group=str(hv.get("devicevault_collector_group") or ""),
            max_age=_hours(hv.get("devicevault_max_age"), path, host.name),
            platform=own_platform,
            secrets_mode=_secrets_mode(hv.get("devicevault_secrets"), path, host.name),
            keep_raw=_flag(hv.get("devicevault_keep_raw"), path, host.name, "devicevault_keep_raw"),
            secrets=tuple(str(hv[k]) for k in _SECRET_VARS if isinstance(hv.get(k), str) and "{{" not in hv[k]),
        )
    return hosts


def _flag(value, path, host: str, name: str) -> bool:
    flag = False if value is None else parse_flag(value)
    if flag is None:
        raise InventoryError(f"{path}: host {host!r}: {name} must be true or false, not {value!r}")
    return flag


def _secrets_mode(value, path, host: str) -> str:
    mode = str(value or "mask").strip().lower()
    if mode not in ("mask", "keep", "drop"):
        raise InventoryError(f"{path}: host {host!r}: devicevault_secrets must be mask, keep or drop, not {value!r}")
    return mode


def _hours(value, path, host: str) -> float:
    if value in (None, ""):
        return 0.0
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InventoryError(f"{path}: host {host!r}: devicevault_max_age must be a number of hours, not {value!r}") from None


def select_hosts(
    inventory: dict[str, InventoryHost], *, groups: list[str] | None = None, hosts: list[str] | None = None
) -> list[InventoryHost]:
    """Hosts in any of ``groups`` plus the named ``hosts``; everything when neither is given."""
    if not groups and not hosts:
        return sorted(inventory.values(), key=lambda h: h.name)
    chosen: dict[str, InventoryHost] = {}
    for name in hosts or []:
        if name not in inventory:
            raise InventoryError(f"host {name!r} is not in the inventory")
        chosen[name] = inventory[name]
    for group in groups or []:
        members = [h for h in inventory.values() if group in h.groups]
        if not members:
            raise InventoryError(f"group {group!r} is not in the inventory (or has no hosts)")
        chosen.update((h.name, h) for h in members)
    return sorted(chosen.values(), key=lambda h: h.name)
