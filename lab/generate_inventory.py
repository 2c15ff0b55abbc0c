"""Write an Ansible inventory of N lab devices across the lab's platforms and several sites.

    python -m lab.generate_inventory --count 200 --out /tmp/inv200 --port 2300 --base 127.0.20.0

Layout written to ``out``::

    hosts.yml                 # groups site_<x> (hosts with ansible_host) and per platform (children)
    group_vars/all.yml        # ansible_port, ansible_connection, credentials, host key checking
    group_vars/<platform>.yml # ansible_network_os [+ devicevault_platform] from the platform file, then the
                              # personality's ``inventory:`` (become settings for ios / eos ...)
"""
from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path

import yaml

#: the platforms an inventory gets by default (one device of each per round); ``all_platforms()`` is every
#: personality in ``lab/personalities/``
DEFAULT_PLATFORMS = ["ios", "eos", "nxos", "junos", "routeros"]


def platform_vars(extra_dir: str | None = None) -> dict[str, dict]:
    """Group variables per platform that has both a personality and a platform file (data, not code): what
    makes DeviceVault pick the platform file (its ``network_os`` as ``ansible_network_os``, and
    ``devicevault_platform`` when that alone does not name the file, as for DeviceVault's own plugin),
    then the personality's ``inventory:`` mapping. Platform files are found as DeviceVault finds them
    (``$DEVICEVAULT_PLATFORMS_DIR`` before the built-in ones)."""
    from jobs.collect.platforms import PLATFORM_VAR, all_platforms as platform_files, platform_name

    from .personality import load_personalities

    files = platform_files()
    out = {}
    for name, p in load_personalities(extra_dir).items():
        platform = files.get(name)
        if platform is None:
            continue
        variables = {"ansible_network_os": platform.network_os}
        if platform_name(None, platform.network_os) != name:
            variables[PLATFORM_VAR] = name
        variables.update(p.get("inventory") or {})
        out[name] = variables
    return out


def all_platforms(extra_dir: str | None = None) -> list[str]:
    """Every personality that has a platform file, core five first, then by name."""
    names = list(platform_vars(extra_dir))
    return [p for p in DEFAULT_PLATFORMS if p in names] + sorted(n for n in names if n not in DEFAULT_PLATFORMS)


SITES = ["ams", "nyc", "sgp", "fra", "lon", "sjc"]
ALL_VARS = {
    "ansible_connection": "ansible.netcommon.network_cli",
    "ansible_user": "admin",
    "ansible_password": "lab-admin",
    "ansible_host_key_checking": False,
}


def generate_inventory(count: int, out, port: int = 2222, base: str = "127.0.20.0",
                       sites: list[str] | None = None, platforms: list[str] | str | None = None,
                       unknown: list[tuple[str, str]] | None = None, personalities_dir: str | None = None) -> list[str]:
    """Write an inventory of ``count`` devices to directory ``out``; returns the host names.

    Devices are spread round-robin over ``platforms`` (default the core five, ``"all"`` for every
    personality; a personality's ``inventory:`` mapping becomes its group_vars) and
    ``sites`` (default 3 sites, more above 60 devices); addresses are
    ``base``+1, +2, ... on loopback; all share ``port``. ``unknown`` is an optional
    list of (hostname, ansible_network_os) hosts for which the lab has no
    personality (group ``unsupported``).
    """
    out = Path(out)
    (out / "group_vars").mkdir(parents=True, exist_ok=True)
    known = platform_vars(personalities_dir)
    if platforms == "all":
        platforms = all_platforms(personalities_dir)
    platforms = list(platforms or DEFAULT_PLATFORMS)
    missing = [p for p in platforms if p not in known]
    if missing:
        raise ValueError(f"no lab personality or no platform file for platform(s) {', '.join(missing)} "
                         "(lab/personalities/*.yml, the collection's platforms/*.yml)")
    sites = list(sites or SITES[: 3 if count <= 60 else 6])
    base_ip = ipaddress.IPv4Address(base)
    site_groups = {s: {"hosts": {}} for s in sites}
    plat_groups = {p: {"hosts": {}} for p in platforms}
    counters: dict = {}
    names = []
    for i in range(count):
        plat = platforms[i % len(platforms)]
        site = sites[(i // len(platforms)) % len(sites)]
        counters[(site, plat)] = counters.get((site, plat), 0) + 1
        name = f"{site}-{plat}-{counters[(site, plat)]:02d}"
        addr = base_ip + i + 1
        if addr.packed[3] in (0, 255):
            base_ip += 2
            addr = base_ip + i + 1
        site_groups[site]["hosts"][name] = {"ansible_host": str(addr)}
        plat_groups[plat]["hosts"][name] = None
        names.append(name)
    children = {f"site_{s}": g for s, g in site_groups.items()}
    children.update(plat_groups)
    if unknown:
        unsup = {"hosts": {}}
        for k, (name, nos) in enumerate(unknown):
            unsup["hosts"][name] = {"ansible_host": str(base_ip + 250 - k) if count < 240 else "127.0.9.250",
                                    "ansible_network_os": nos}
        children["unsupported"] = unsup
    doc = {"all": {"children": children}}
    header = "# Generated by lab/generate_inventory.py -- lab devices served by `python -m lab up`.\n"
    (out / "hosts.yml").write_text(header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))
    (out / "group_vars" / "all.yml").write_text(
        "# Common connection settings for all lab devices (lab credentials, not secrets).\n"
        + yaml.safe_dump({**ALL_VARS, "ansible_port": int(port)}, sort_keys=False))
    for plat in platforms:
        (out / "group_vars" / f"{plat}.yml").write_text(yaml.safe_dump(known[plat], sort_keys=False))
    return names


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m lab.generate_inventory")
    ap.add_argument("--count", type=int, default=25)
    ap.add_argument("--out", required=True)
    ap.add_argument("--port", type=int, default=2222)
    ap.add_argument("--base", default="127.0.20.0")
    ap.add_argument("--sites", help="comma separated site names")
    ap.add_argument("--platforms", help="comma separated personality names, or 'all' (default: "
                    + ",".join(DEFAULT_PLATFORMS) + ")")
    a = ap.parse_args(argv)
    names = generate_inventory(a.count, a.out, a.port, a.base, a.sites.split(",") if a.sites else None,
                               ("all" if a.platforms == "all" else a.platforms.split(",")) if a.platforms else None)
    print(f"wrote {len(names)} devices to {a.out}")


if __name__ == "__main__":
    main()
