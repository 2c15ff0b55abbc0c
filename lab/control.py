"""Python control API for a lab's per-device state (works while the lab runs).

    from lab.control import LabControl
    lc = LabControl("var/lab")
    lc.change("ams-ios-01")            # -> ['ip route 10.250.0.1 ... name LAB-CHANGE-1']
    lc.remove_lines("ams-ios-01", r"^service password-encryption$")   # -> the removed lines
    lc.add_line("ams-ios-01", "service password-encryption", after=r"^service timestamps log")
    lc.save("ams-ios-01")              # startup-config := running-config
    lc.set_fault("ams-ios-01", "slow", delay=5)
    lc.set_fault("ams-ios-01", "disconnect", fraction=0.4)
    lc.set_fault("ams-ios-01", "answer", text="No such command : {command}")   # every backup command
    lc.set_fault("ams-ios-01", "answer", commands="show version", text="")     # an empty reply to one
    lc.clear_fault("ams-ios-01")
    lc.reset_session_peak()            # peak := SSH connections open now
    lc.sessions()                      # -> {'open': 0, 'peak': 3, 'per_device': {'ams-ios-01': {...}, ...}}

The server re-reads a device's JSON file at each session and command, so
changes take effect immediately without any IPC. Session counts travel the
other way through two small files in the state directory (lab/sessions.py).
"""
from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path

from . import sessions as _sessions
from . import state as S
from .configgen import generate_config
from .personality import load_personalities
from .render import render_config

DEFAULT_FAULT_PARAMS = {"slow": {"delay": 5.0}, "disconnect": {"fraction": 0.4},
                        "answer": {"text": "No such command : {command}", "commands": ""}}


def new_device_state(device, personality) -> dict:
    """Initial state of ``device`` (a :class:`lab.inventory.Device`): generated config, no fault."""
    cfg = generate_config(device.name, personality.get("template"), site=device.site,
                          spec=personality.get("model") or {}, facts=personality.get("facts") or {},
                          template_text=personality.get("config_template"))
    now = time.time()
    return {"host": device.name, "personality": personality.name, "network_os": device.network_os,
            "site": device.site, "address": device.host, "port": device.port,
            "running": cfg, "startup": cfg, "change_seq": 0, "changes": [],
            "changed_at": now, "changed_by": "admin", "saved_at": now,
            "fault": {"mode": "none"}}


class LabControl:
    """Per-device state of the lab whose state directory is ``state_dir``."""

    def __init__(self, state_dir):
        self.state_dir = Path(state_dir)

    # -- queries ---------------------------------------------------------
    def hosts(self) -> list[str]:
        """Names of all devices with state."""
        return sorted(S.host_of(p) for p in S.devices_dir(self.state_dir).glob("*.json"))

    def state(self, host: str) -> dict:
        """The raw state dict of ``host`` (running/startup contain volatile markers)."""
        return S.read_state(self.state_dir, host)

    def running_config(self, host: str) -> str:
        """Running config of ``host`` as the device would print it (volatile lines filled in)."""
        st = self.state(host)
        return render_config(st, "running", load_personalities()[st["personality"]])

    def fault_of(self, host: str) -> dict:
        return self.state(host).get("fault", {"mode": "none"})

    # -- SSH session accounting (lab/sessions.py) --------------------------
    def sessions(self, timeout: float = 10) -> dict:
        """SSH connections the running lab holds, counted from its side (TCP accept to close, authenticated
        or not): ``{"open": n, "peak": m, "per_device": {host: {"open": n, "peak": m}}}``, where ``peak`` is
        the most open at once since :meth:`reset_session_peak` (or the lab's start). ``per_device`` holds only
        devices with a connection open or a non-zero peak. The snapshot is taken after this call (it waits
        for the server's next tick, 50 ms); TimeoutError when no lab answers within ``timeout``."""
        return self._session_request(False, timeout)

    def reset_session_peak(self, timeout: float = 10) -> dict:
        """Start a new peak: every peak := what is open now. Returns the snapshot right after the reset."""
        return self._session_request(True, timeout)

    def wait_sessions(self, condition, timeout: float = 20) -> dict:
        """Poll :meth:`sessions` until ``condition(snapshot)`` holds; returns that snapshot, or raises
        TimeoutError naming the last one seen after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            snap = self.sessions()
            if condition(snap):
                return snap
            if time.monotonic() > deadline:
                raise TimeoutError(f"lab sessions after {timeout}s: {snap}")
            time.sleep(0.1)

    def _session_request(self, reset_peak: bool, timeout: float) -> dict:
        snap = _sessions.request(self.state_dir, reset_peak=reset_peak, timeout=timeout)
        return {k: snap[k] for k in ("open", "peak", "per_device")}

    # -- changes -----------------------------------------------------------
    def change(self, host: str, n: int = 1, user: str = "labctl") -> list[str]:
        """Make ``n`` real configuration changes on ``host``'s running-config.

        Each change inserts one new line (the personality's ``change.line``)
        after the last line matching ``change.after``; a diff of the config
        before/after shows exactly the returned lines as added. Startup-config
        is not touched (use :meth:`save`).
        """
        added = []
        with S.modify(self.state_dir, host) as st:
            p = load_personalities()[st["personality"]]
            spec = p.get("change")
            lines = st["running"].split("\n")
            for _ in range(int(n)):
                st["change_seq"] += 1
                seq = st["change_seq"]
                line = p.render(spec["line"], {"seq": seq, "a": (seq // 250) % 250, "b": seq % 250 + 1,
                                               "host": host, "now": _dt.datetime.now(_dt.timezone.utc)})
                idx = max((i for i, ln in enumerate(lines) if p.change_after.search(ln)), default=len(lines) - 2)
                lines.insert(idx + 1, line)
                added.append(line)
            st["running"] = "\n".join(lines)
            st["changed_at"] = time.time()
            st["changed_by"] = user
            st["changes"] = (st.get("changes", []) + added)[-100:]
        return added

    def remove_lines(self, host: str, pattern: str, user: str = "labctl") -> list[str]:
        """Remove every line of ``host``'s running-config matching the regex ``pattern`` (``re.search``), as an
        operator's ``no ...`` would; returns the removed lines ([] and no change when none matches).
        Startup-config is not touched."""
        import re

        regex = re.compile(pattern)
        with S.modify(self.state_dir, host) as st:
            lines = st["running"].split("\n")
            removed = [line for line in lines if regex.search(line)]
            if removed:
                st["running"] = "\n".join(line for line in lines if not regex.search(line))
                st["changed_at"] = time.time()
                st["changed_by"] = user
        return removed

    def add_line(self, host: str, line: str, after: str | None = None, user: str = "labctl") -> bool:
        """Add ``line`` to ``host``'s running-config after the last line matching the regex ``after`` (else
        where :meth:`change` adds its lines), unless the configuration already has that line. True when it
        was added. Startup-config is not touched."""
        import re

        with S.modify(self.state_dir, host) as st:
            lines = st["running"].split("\n")
            if line in lines:
                return False
            p = load_personalities()[st["personality"]]
            where = re.compile(after) if after else p.change_after
            idx = max((i for i, ln in enumerate(lines) if where.search(ln)), default=len(lines) - 2)
            lines.insert(idx + 1, line)
            st["running"] = "\n".join(lines)
            st["changed_at"] = time.time()
            st["changed_by"] = user
        return True

    def grow(self, host: str, size: int) -> int:
        """Make ``host``'s running-config at least ``size`` bytes long with filler VLAN interfaces (a
        chassis-sized configuration; Cisco-style personalities only), inserted before the first interface.
        Returns the new length. Startup-config is not touched."""
        with S.modify(self.state_dir, host) as st:
            if st["personality"] not in ("ios", "eos", "nxos"):
                raise ValueError(f"{host}: grow() writes Cisco-style interfaces; {st['personality']} is not one")
            lines = st["running"].split("\n")
            at = next((i for i, line in enumerate(lines) if line.startswith("interface ")), len(lines) - 1)
            filler, length, vlan = [], len(st["running"]), 0
            while length < size:
                vlan += 1
                block = [f"interface Vlan{vlan}", f" description filler {vlan} of a chassis-sized configuration",
                         f" ip address 10.{vlan >> 16 & 255}.{vlan >> 8 & 255}.{vlan & 255} 255.255.255.0", "!"]
                filler += block
                length += sum(len(line) + 1 for line in block)
            st["running"] = "\n".join(lines[:at] + filler + lines[at:])
            st["changed_at"] = time.time()
            return len(st["running"])

    def save(self, host: str) -> None:
        """startup-config := running-config (like ``write memory``)."""
        with S.modify(self.state_dir, host) as st:
            st["startup"] = st["running"]
            st["saved_at"] = time.time()

    def reset(self, host: str) -> None:
        """Forget all changes: running and startup back to the generated config (keeps the fault)."""
        with S.modify(self.state_dir, host) as st:
            from .inventory import Device
            p = load_personalities()[st["personality"]]
            d = Device(name=host, host=st["address"], port=st["port"], user="", password="",
                       network_os=st["network_os"], site=st.get("site", "lab"))
            fresh = new_device_state(d, p)
            fresh["fault"] = st.get("fault", {"mode": "none"})
            st.clear()
            st.update(fresh)

    # -- faults ------------------------------------------------------------
    def set_fault(self, host: str, mode: str, **params) -> dict:
        """Inject a fault on ``host``.

        Modes: ``none``; ``auth_fail`` (correct password rejected); ``slow``
        (``delay`` seconds before each response, default 5); ``hang`` (login ok,
        then no prompt and no answers ever); ``pause`` (no banner or answer while the fault is set; once it
        is cleared the device goes on where it stopped: a backup held at a known point, then let go); ``disconnect`` (config commands
        send ``fraction`` (default 0.4) of the output, then the connection is
        dropped); ``answer`` (the commands a backup sends, per the device's platform file, or those
        matching the regex ``commands``, are answered with ``text`` instead, ``{command}`` standing for the
        command line: default ``No such command : {command}``; an empty ``text`` is an empty reply).
        Returns the stored fault dict.
        """
        if mode not in S.FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; expected one of {', '.join(S.FAULT_MODES)}")
        fault = {"mode": mode, **DEFAULT_FAULT_PARAMS.get(mode, {}), **params}
        with S.modify(self.state_dir, host) as st:
            st["fault"] = fault
        return fault

    def clear_fault(self, host: str) -> None:
        """Back to normal behaviour (mode ``none``)."""
        self.set_fault(host, "none")
