"""Deterministic (seeded by hostname) running-configuration generator.

:func:`build_model` builds a platform-neutral model of a device (interfaces,
VLANs, routing, ACLs, users, secrets, ...); the personality's Jinja2 template
(``lab/templates/<template>``) renders it in the platform's own syntax.
Volatile lines are written by templates as ``{{ vol('name') }}`` which leaves a
marker; the server substitutes the marker with the personality's
``volatile.<name>`` template (fresh at every read).
"""
from __future__ import annotations

import hashlib
import ipaddress
import random
import string
from functools import lru_cache
from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).with_name("templates")
VOL_MARK = "@@VOL:{}@@"

PEER_ROLES = ["core", "dist", "agg", "edge", "fw", "wan", "lb", "spine", "leaf"]
DESCRS = [
    "uplink to {peer} {pif}", "downlink to {peer} {pif}", "server {rack}-{n} eth0",
    "server {rack}-{n} bond0", "WAN circuit {circuit} ({carrier})", "peering {carrier} {circuit}",
    "printer floor {n}", "AP floor {n} room {rack}", "firewall {peer} outside", "storage array {rack}",
    "hypervisor {rack}-{n} vmnic2", "out-of-band console server", "camera cluster {n}",
]
CARRIERS = ["Lumen", "Zayo", "Cogent", "NTT", "Telia", "GTT", "KPN", "Singtel"]
VLAN_NAMES = ["USERS", "VOICE", "PRINTERS", "SERVERS", "MGMT", "WIFI-CORP", "WIFI-GUEST", "CAMERAS",
              "STORAGE", "BACKUP", "DMZ", "LAB", "IOT", "VMOTION", "CLUSTER", "BUILDING-MGMT"]
USERS = ["netops", "backup", "auditor", "jdoe", "asmith", "noc", "ansible", "oncall"]


def _rng(hostname: str, salt: str = "") -> random.Random:
    return random.Random(hashlib.sha256(f"{hostname}|{salt}".encode()).digest())


def _b64ish(rng, n, alphabet=string.ascii_letters + string.digits + "./"):
    return "".join(rng.choice(alphabet) for _ in range(n))


class Secrets:
    """Deterministic fake secrets in real formats."""

    def __init__(self, rng: random.Random):
        self.r = rng

    def md5(self):      # IOS type 5 / md5crypt
        return f"$1${_b64ish(self.r, 4)}${_b64ish(self.r, 22)}"

    def sha512(self):   # EOS / Junos / NX-OS $6$
        return f"$6${_b64ish(self.r, 16)}${_b64ish(self.r, 86)}"

    def sha256(self):   # NX-OS $5$
        return f"$5${_b64ish(self.r, 8)}${_b64ish(self.r, 43)}"

    def type9(self):    # IOS scrypt
        return f"$9${_b64ish(self.r, 14)}${_b64ish(self.r, 43)}"

    def type7(self):
        return "".join(self.r.choice("0123456789ABCDEF") for _ in range(self.r.randrange(16, 28, 2)))

    def junos9(self):   # Junos $9$ reversible
        return "$9$" + _b64ish(self.r, self.r.randrange(18, 40), string.ascii_letters + string.digits + "-./")

    def word(self, n=12):
        return _b64ish(self.r, n, string.ascii_letters + string.digits)


def _mask(prefixlen: int) -> str:
    return str(ipaddress.IPv4Network(f"0.0.0.0/{prefixlen}").netmask)


def _wildcard(prefixlen: int) -> str:
    return str(ipaddress.IPv4Network(f"0.0.0.0/{prefixlen}").hostmask)


def build_model(hostname: str, site: str = "lab", spec: dict | None = None) -> dict:
    """Platform-neutral, deterministic model of ``hostname``. ``spec`` is the personality's ``model`` dict."""
    spec = spec or {}
    r = _rng(hostname)
    sec = Secrets(_rng(hostname, "secrets"))
    site_n = int(hashlib.sha256(site.encode()).hexdigest(), 16) % 200 + 10
    host_n = r.randrange(1, 250)
    m: dict = {"hostname": hostname, "site": site, "site_upper": site.upper(),
               "domain": f"{site}.lab.devicevault.net"}
    m["loopback"] = f"10.255.{site_n}.{host_n}"
    m["mgmt_ip"] = f"10.{site_n}.0.{host_n}"
    m["mgmt_gw"] = f"10.{site_n}.0.1"
    m["asn"] = 64512 + site_n
    m["router_id"] = m["loopback"]

    # interfaces
    names = []
    for grp in spec.get("interfaces", [{"fmt": "eth{}", "start": 1, "count": 8}]):
        for i in range(grp.get("start", 0), grp.get("start", 0) + grp["count"]):
            names.append(grp["fmt"].format(i))
    vlans = []
    for vid in sorted(r.sample(range(10, 400), r.randint(6, 12))):
        vlans.append({"id": vid, "name": f"{r.choice(VLAN_NAMES)}-{vid}",
                      "ip": f"10.{site_n}.{vid % 250}.1", "prefix": 24, "mask": _mask(24)})
    m["vlans"] = vlans
    ifaces = []
    p2p = 0
    for idx, name in enumerate(names):
        role = r.random()
        d = r.choice(DESCRS).format(peer=f"{site}-{r.choice(PEER_ROLES)}-{r.randint(1, 4):02d}",
                                    pif=r.choice(["Gi0/1", "Et49", "xe-0/0/0", "Eth1/1", "ether1"]),
                                    rack=f"{r.choice('ABCDEFGH')}{r.randint(1, 30)}", n=r.randint(1, 40),
                                    circuit=f"{r.choice(['CKT', 'IPT', 'MPLS'])}{r.randint(100000, 999999)}",
                                    carrier=r.choice(CARRIERS))
        it = {"name": name, "index": idx, "description": d, "mtu": r.choice([1500, 1500, 9000, 9216])}
        if idx < 2 or role < 0.25:
            p2p += 1
            base = ipaddress.IPv4Address(f"10.{site_n}.{200 + (host_n % 50)}.0") + 4 * p2p
            it.update(mode="routed", ip=str(base + 1), peer_ip=str(base + 2), prefix=30, mask=_mask(30),
                      ospf=True)
        elif role < 0.55:
            it.update(mode="access", vlan=r.choice(vlans)["id"])
        elif role < 0.75:
            it.update(mode="trunk", vlans=sorted(v["id"] for v in r.sample(vlans, min(len(vlans), r.randint(2, 5)))))
        else:
            it.update(mode="shutdown", description="unused")
        ifaces.append(it)
    m["interfaces"] = ifaces
    m["routed_interfaces"] = [i for i in ifaces if i["mode"] == "routed"]

    m["ospf"] = {"process": 1, "area": "0.0.0.0", "area_n": 0,
                 "networks": [{"net": str(ipaddress.IPv4Network(f"{i['ip']}/30", strict=False).network_address),
                               "prefix": 30, "wildcard": _wildcard(30), "mask": _mask(30)}
                              for i in m["routed_interfaces"]]}
    m["bgp_neighbors"] = [{"ip": f"10.{r.randint(1, 250)}.{r.randint(0, 255)}.{r.randint(1, 254)}",
                           "asn": r.choice([m["asn"], 174, 2914, 3356, 1299, 6939, 64600 + r.randint(0, 99)]),
                           "description": f"{r.choice(CARRIERS).upper()}-{r.randint(1, 9)}",
                           "password": sec.word(14)}
                          for _ in range(r.randint(2, 6))]
    for n in m["bgp_neighbors"]:
        n["ibgp"] = n["asn"] == m["asn"]
    m["bgp_networks"] = [{"net": f"10.{site_n}.{v['id'] % 250}.0", "prefix": 24, "mask": _mask(24)} for v in vlans[:4]]
    m["static_routes"] = [{"net": f"172.{r.randint(16, 31)}.{r.randint(0, 255)}.0", "prefix": 24, "mask": _mask(24),
                           "nh": m["mgmt_gw"] if k == 0 else r.choice(m["routed_interfaces"])["peer_ip"],
                           "name": f"STATIC-{k + 1}"}
                          for k in range(r.randint(3, 8))]
    m["default_nh"] = m["routed_interfaces"][0]["peer_ip"]
    acls = []
    for aname in ["MGMT-ACCESS", "EDGE-IN"]:
        rules = []
        for seq in range(10, 10 * r.randint(6, 14), 10):
            proto = r.choice(["tcp", "udp", "icmp", "ip"])
            port = r.choice([22, 53, 123, 161, 443, 179, 514, 8443]) if proto in ("tcp", "udp") else None
            rules.append({"seq": seq, "action": r.choice(["permit", "permit", "deny"]), "proto": proto,
                          "src": f"10.{r.randint(0, 255)}.{r.randint(0, 255)}.0", "src_prefix": 24,
                          "src_wild": _wildcard(24), "src_mask": _mask(24), "port": port})
        rules.append({"seq": seq + 10, "action": "deny", "proto": "ip", "src": "0.0.0.0", "src_prefix": 0,
                      "src_wild": "255.255.255.255", "src_mask": "0.0.0.0", "port": None, "any": True})
        acls.append({"name": aname, "rules": rules})
    m["acls"] = acls
    m["users"] = [{"name": "admin", "privilege": 15, "role": "network-admin", "class": "super-user"}] + [
        {"name": u, "privilege": r.choice([1, 15]), "role": r.choice(["network-admin", "network-operator"]),
         "class": r.choice(["super-user", "read-only", "operator"])}
        for u in r.sample(USERS, r.randint(2, 4))]
    for u in m["users"]:
        u.update(md5=sec.md5(), sha512=sec.sha512(), sha256=sec.sha256(), type9=sec.type9())
    m["enable_secret"] = sec.type9()
    m["enable_sha512"] = sec.sha512()
    m["snmp"] = {"ro": sec.word(16), "rw": sec.word(16), "location": f"{site.upper()} DC, row {r.randint(1, 9)}",
                 "contact": "noc@devicevault.example", "auth": sec.word(20), "priv": sec.word(20),
                 "hosts": [f"10.{site_n}.5.{r.randint(10, 20)}", "10.0.5.10"]}
    m["snmp"]["auth_hex"] = hashlib.md5(m["snmp"]["auth"].encode()).hexdigest()
    m["snmp"]["priv_hex"] = hashlib.md5(m["snmp"]["priv"].encode()).hexdigest()
    m["ntp"] = ["10.0.0.123", "10.0.1.123", f"10.{site_n}.0.123"]
    m["ntp_key"] = sec.word(12)
    m["ntp_key_type7"] = sec.type7()
    m["logging"] = ["10.0.6.20", f"10.{site_n}.6.20"]
    m["tacacs"] = [{"ip": f"10.0.7.{k}", "key": sec.word(18), "key7": sec.type7(), "key9": sec.junos9()}
                   for k in (11, 12)]
    m["radius"] = [{"ip": f"10.0.8.{k}", "key": sec.word(18), "key7": sec.type7(), "key9": sec.junos9()}
                   for k in (21,)]
    m["dns"] = ["10.0.0.53", "10.0.1.53"]
    m["junos_root"] = sec.sha512()
    m["wg_key"] = _b64ish(_rng(hostname, "wg"), 43, string.ascii_letters + string.digits + "+/") + "="
    m["serial"] = "".join(r.choice(string.ascii_uppercase + string.digits) for _ in range(11))
    m["sw_id"] = f"{_b64ish(r, 4, string.ascii_uppercase + string.digits)}-{_b64ish(r, 4, string.ascii_uppercase + string.digits)}"
    m["mac"] = "52:54:00:%02x:%02x:%02x" % (r.randrange(256), r.randrange(256), r.randrange(256))
    m["uptime_days"] = r.randint(1, 700)
    m["uptime_hours"] = r.randint(0, 23)
    return m


@lru_cache(maxsize=None)
def jinja_env(extra_dir: str | None = None) -> jinja2.Environment:
    dirs = [str(TEMPLATES)] + ([extra_dir] if extra_dir else [])
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(dirs), trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.globals["vol"] = lambda name: VOL_MARK.format(name)
    return env


def generate_config(hostname: str, template: str | None, site: str = "lab", spec: dict | None = None,
                    facts: dict | None = None, template_text: str | None = None) -> str:
    """Render the (marker-bearing) running configuration of ``hostname`` with ``template`` (a file in
    ``lab/templates``) or ``template_text`` (a personality's inline ``config_template``)."""
    m = build_model(hostname, site, spec)
    if template_text is not None:
        tpl = jinja_env().from_string(template_text)
    elif template:
        tpl = jinja_env().get_template(template)
    else:
        raise ValueError(f"{hostname}: the personality has neither 'template' nor 'config_template'")
    text = tpl.render(m=m, p=facts or {})
    lines = [ln.rstrip() for ln in text.splitlines()]
    return "\n".join(lines).rstrip("\n") + "\n"
