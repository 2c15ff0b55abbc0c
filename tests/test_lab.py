"""Simulated device lab, checked with real ansible-playbook (network_cli) against it."""
from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

import pytest
import yaml

from lab.testing import run_playbook, running_lab, task_results

REPO = Path(__file__).resolve().parent.parent
PLATFORMS = ["ios", "eos", "nxos", "junos", "routeros"]
END_MARKER = {"ios": r"^end$", "eos": r"^end$", "nxos": r"^boot nxos ", "junos": r"^\}$",
              "routeros": r"set name=\S+"}

FETCH = """
- hosts: all
  gather_facts: false
  tasks:
    - ansible.netcommon.cli_command:
        command: "{{ cmds[inventory_hostname] }}"
"""


def platform_file(name: str) -> dict:
    from jobs.collect.platforms import BUILTIN_DIR

    return yaml.safe_load((BUILTIN_DIR / f"{name}.yml").read_text())


def config_command(pf: dict) -> str:
    """The platform file's configuration command (the first that is not identity output)."""
    return next(c if isinstance(c, str) else c["command"] for c in pf["commands"]
                if isinstance(c, str) or not c.get("comment"))


def plat_of(host: str) -> str:
    return host.split("-")[1]


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    with running_lab(count=5, base="127.0.30.0", workdir=tmp_path_factory.mktemp("lab")) as handle:
        yield handle


def fetch(lab, hosts=None, command=None, **env):
    hosts = hosts or lab.hosts
    cmds = {h: command or config_command(platform_file(plat_of(h))) for h in hosts}
    rc, data = run_playbook(lab.inventory, FETCH, extra_vars={"cmds": cmds}, limit=",".join(hosts), **env)
    return rc, task_results(data)


def normalize(text: str, pf: dict) -> list[str]:
    from jobs.collect.normalize import clean_lines
    from jobs.collect.platforms import get_platform

    return clean_lines(get_platform(pf["name"]), text)


def test_lab_counts_ssh_connections_open_and_peak_per_device(lab):
    """The lab's own count of SSH connections: from the TCP accept (authenticated or not) to the close."""
    import socket

    a, b, c = lab.host("ios"), lab.host("eos"), lab.host("nxos")
    addr = {d["name"]: (d["host"], d["port"]) for d in json.loads((lab.state_dir / "lab.json").read_text())["devices"]}
    lab.control.wait_sessions(lambda s: s["open"] == 0, timeout=60)  # nothing left over from an earlier test
    assert lab.control.reset_session_peak() == {"open": 0, "peak": 0, "per_device": {}}
    socks = [socket.create_connection(addr[h], timeout=5) for h in (a, a, b)]  # never authenticate
    try:
        for s in socks:
            assert s.recv(4) == b"SSH-"  # the server has accepted it
        snap = lab.control.sessions()
        assert snap == {"open": 3, "peak": 3, "per_device": {a: {"open": 2, "peak": 2}, b: {"open": 1, "peak": 1}}}
    finally:
        for s in socks:
            s.close()
    snap = lab.control.wait_sessions(lambda s: s["open"] == 0, timeout=20)
    assert snap["peak"] == 3 and snap["per_device"] == {a: {"open": 0, "peak": 2}, b: {"open": 0, "peak": 1}}
    assert lab.control.reset_session_peak() == {"open": 0, "peak": 0, "per_device": {}}
    _, closed = ssh_read(lab, c, "show privilege")  # one authenticated session, closed by the client
    assert not closed
    snap = lab.control.wait_sessions(lambda s: s["open"] == 0, timeout=20)
    assert snap["peak"] == 1 and snap["per_device"] == {c: {"open": 0, "peak": 1}}


def test_inventory_covers_all_platforms(lab):
    assert sorted(plat_of(h) for h in lab.hosts) == sorted(PLATFORMS)


def test_backup_every_platform(lab):
    rc, res = fetch(lab)
    assert rc == 0, res
    for host, r in res.items():
        pf = platform_file(plat_of(host))
        out = r["stdout"]
        assert not r.get("failed"), (host, r.get("msg"))
        assert len(out.splitlines()) > 140, host
        assert host in out, host
        assert re.search(END_MARKER[plat_of(host)], out, re.M), host
        for c in pf["complete"]:
            assert re.search(c, out, re.M), (host, c)
        assert not any(re.search(e, out, re.M) for e in pf["errors"]), host
        noisy = [ln for ln in out.splitlines() if any(re.search(n, ln) for n in pf["noise"])]
        assert noisy, f"{host}: no volatile lines"
        # truncated output is never "complete"
        cut = out[: len(out) * 2 // 5]
        assert not all(re.search(c, cut, re.M) for c in pf["complete"]), host


def test_volatile_lines_change_between_reads(lab):
    import time
    h = lab.host("ios")
    a = lab.control.running_config(h)
    time.sleep(1.1)
    b = lab.control.running_config(h)
    assert a != b
    pf = platform_file("ios")
    assert normalize(a, pf) == normalize(b, pf)


def test_change_alters_exactly_intended_lines(lab):
    rc, before = fetch(lab)
    assert rc == 0
    added = {h: lab.control.change(h, n=2) for h in lab.hosts}
    rc, after = fetch(lab)
    assert rc == 0
    for h in lab.hosts:
        pf = platform_file(plat_of(h))
        diff = [d for d in difflib.unified_diff(normalize(before[h]["stdout"], pf),
                                                normalize(after[h]["stdout"], pf), lineterm="", n=0)
                if d[:1] in "+-" and not d.startswith(("+++", "---"))]
        want = added[h]
        if plat_of(h) == "routeros":   # terse export prints the section path in front
            assert [d[1:].split(" add ", 1)[1] for d in diff] == [w.split("add ", 1)[1] for w in want], (h, diff)
        else:
            assert diff == ["+" + w for w in want], (h, diff)


def test_startup_config_and_save(lab):
    h = lab.host("ios")
    lab.control.change(h)
    st = lab.control.state(h)
    assert st["running"] != st["startup"]
    rc, res = fetch(lab, [h], command="write memory")
    assert rc == 0 and "[OK]" in res[h]["stdout"]
    st = lab.control.state(h)
    assert st["running"] == st["startup"]


def test_unknown_command_fails(lab):
    rc, res = fetch(lab, command="show frobnicate")
    assert rc != 0
    for h, r in res.items():
        assert r.get("failed"), h


def test_auth_fail(lab):
    h = lab.host("eos")
    lab.control.set_fault(h, "auth_fail")
    try:
        rc, res = fetch(lab, [h])
    finally:
        lab.control.clear_fault(h)
    assert rc != 0
    assert res[h].get("failed")
    assert re.search(r"authenticat", res[h]["msg"], re.I), res[h]["msg"]


def ssh_read(lab, host: str, command: str, timeout: float = 30) -> tuple[str, bool]:
    """Log in to ``host`` over SSH, wait for its prompt, send ``command``; returns (what came back until the
    next prompt or the end of the connection, whether the device closed the connection)."""
    import asyncio

    import asyncssh

    from lab.inventory import load_inventory

    device = next(d for d in load_inventory(lab.inventory) if d.name == host)
    prompt = f"{host}# "

    async def read_until_prompt(process) -> tuple[str, bool]:
        text = ""
        while not text.endswith(prompt):
            try:
                chunk = await process.stdout.read(65536)
            except (asyncssh.ConnectionLost, asyncssh.DisconnectError):
                chunk = ""
            if not chunk:
                return text, True
            text += chunk
        return text, False

    async def session() -> tuple[str, bool]:
        conn = await asyncssh.connect(device.host, device.port, username=device.user, password=device.password,
                                      known_hosts=None)
        try:
            process = await conn.create_process(term_type="vt100")
            _, closed = await read_until_prompt(process)
            assert not closed, f"{host}: no prompt"
            process.stdin.write(command + "\n")
            return await read_until_prompt(process)
        finally:
            conn.abort()

    return asyncio.run(asyncio.wait_for(session(), timeout))


def test_disconnect_never_yields_complete_config(lab):
    h = lab.host("nxos")
    pf = platform_file("nxos")
    command = config_command(pf)

    def complete(text: str) -> bool:
        return all(re.search(c, text, re.M) for c in pf["complete"])

    whole, closed = ssh_read(lab, h, command)
    assert complete(whole) and not closed, "without the fault the same read is complete"
    lab.control.set_fault(h, "disconnect", fraction=0.5)
    try:
        part, closed = ssh_read(lab, h, command)
        rc, res = fetch(lab, [h])
    finally:
        lab.control.clear_fault(h)
    # the device sends the first part of the configuration, then drops the connection
    assert closed and part.count("\n") > 20 and not complete(part), part[-300:]
    r = res[h]
    assert not r.get("unreachable"), r  # the login worked: the connection dropped after the command
    if r.get("failed"):
        assert re.search(r"clos|disconnect|socket|reset|eof|broken", str(r.get("msg")), re.I), r
    else:  # network_cli returns what it had ("None" here) when the socket closes
        assert not complete(str(r.get("stdout") or "")), r


def test_junos_display_set_and_routeros_sensitive(lab):
    j = lab.host("junos")
    rc, res = fetch(lab, [j], command="show configuration | display set")
    assert rc == 0
    lines = res[j]["stdout"].splitlines()
    assert lines and all(ln.startswith("set ") for ln in lines)
    assert f"set system host-name {j}" in lines
    r = lab.host("routeros")
    rc, res = fetch(lab, [r], command="/export")
    assert rc == 0
    assert "secret=" not in res[r]["stdout"] and "/ip route" in res[r]["stdout"]


@pytest.mark.parametrize(("name", "level", "answer"), [
    ("ios", "config", "set_level"), ("ios", "enable", "exit"),
    ("iosxr", "config", "set_level"), ("iosxr", "enable", "exit"),
    ("ciscosmb", "config", "set_level"), ("ciscosmb", "enable", "exit"),
    ("sonic", "config", "set_level"), ("sonic", "enable", "set_level"), ("sonic", "shell", "exit"),
])
def test_exit_is_answered_by_the_entry_for_the_current_level(name, level, answer):
    from lab.personality import load_personalities

    cmd, _ = load_personalities()[name].match("exit", level)
    assert cmd is not None and cmd.spec.get("action") == answer
    assert not cmd.spec.get("levels") or level in cmd.spec["levels"]
