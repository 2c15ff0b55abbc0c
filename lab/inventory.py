"""Read lab devices from an Ansible inventory (the single source of truth).

Uses ansible-core's own ``InventoryManager``/``VariableManager`` (through DeviceVault's one inventory
reader, ``jobs.collect.inventory.open_inventory``: collection plugins, vault passwords) so group_vars,
host_vars and all inventory plugins behave exactly as for ansible-playbook.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger("lab.inventory")


@dataclass
class Device:
    name: str                 # inventory hostname
    host: str                 # ansible_host (127.x.y.z)
    port: int                 # ansible_port
    user: str
    password: str
    network_os: str
    become_password: str | None = None
    site: str = "lab"
    groups: list = field(default_factory=list)
    personality: str | None = None   # filled by the caller (personality name)
    platform: str = ""               # devicevault_platform: names the personality (DeviceVault's own plugin)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _render(templar, value):
    if isinstance(value, str) and "{{" in value and templar is not None:
        try:
            return templar.template(value)
        except Exception:  # pragma: no cover - best effort
            return value
    return value


def load_inventory(source) -> list[Device]:
    """Return every host of the inventory ``source`` (dir or file) as a :class:`Device`.

    Hosts without ``ansible_network_os`` are skipped with a warning.
    """
    from jobs.collect.inventory import open_inventory  # DeviceVault's one reader: collections, vault

    opened = open_inventory(source)
    loader, inv, vm = opened.loader, opened.manager, opened.variables
    try:
        from ansible.template import Templar
    except Exception:  # pragma: no cover
        Templar = None
    devices = []
    for h in inv.get_hosts():
        hv = vm.get_vars(host=h, include_hostvars=False)
        templar = Templar(loader=loader, variables=hv) if Templar else None
        g = lambda k, d=None: _render(templar, hv.get(k, d))  # noqa: E731
        nos = g("ansible_network_os")
        if not nos:
            log.warning("host %s has no ansible_network_os; ignored", h.name)
            continue
        groups = sorted(x.name for x in h.get_groups() if x.name not in ("all", "ungrouped"))
        site = g("site") or next((x[5:] for x in groups if x.startswith("site_")), "lab")
        devices.append(Device(
            name=h.name,
            host=str(g("ansible_host", h.name)),
            port=int(g("ansible_port", 22)),
            user=str(g("ansible_user", "admin")),
            password=str(g("ansible_password", g("ansible_ssh_pass", "")) or ""),
            become_password=(str(g("ansible_become_password")) if g("ansible_become_password") is not None
                             else (str(g("ansible_become_pass")) if g("ansible_become_pass") is not None else None)),
            network_os=str(nos),
            site=str(site),
            groups=groups,
            platform=str(g("devicevault_platform") or ""),
        ))
    return devices
