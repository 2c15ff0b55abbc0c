"""``python -m lab {up,down,status,sessions,change,save,fault,reset}`` -- see lab/commands.py."""
from __future__ import annotations

import argparse
import json
import sys

from jobs.settings import LAB_INVENTORY

from . import commands as C
from .control import LabControl

DEFAULT_STATE = "var/lab"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab", description="DeviceVault simulated device lab")
    sub = ap.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up", help="start the lab")
    u.add_argument("--inventory", "-i", default=str(LAB_INVENTORY))
    u.add_argument("--state-dir", default=DEFAULT_STATE)
    u.add_argument("--daemon", action="store_true", help="run in background; return when all devices answer")
    u.add_argument("--foreground", action="store_true", help=argparse.SUPPRESS)
    u.add_argument("--pidfile")
    u.add_argument("--personalities", help="extra personality directory")
    u.add_argument("--timeout", type=float, default=120)
    u.add_argument("--log-level", default="INFO")
    d = sub.add_parser("down", help="stop the lab")
    d.add_argument("--state-dir", default=DEFAULT_STATE)
    d.add_argument("--pidfile")
    s = sub.add_parser("status", help="show lab and device states")
    s.add_argument("--state-dir", default=DEFAULT_STATE)
    s.add_argument("--pidfile")
    s.add_argument("--json", action="store_true")
    ss = sub.add_parser("sessions", help="SSH connections open now and the peak since the last reset (JSON)")
    ss.add_argument("--reset-peak", action="store_true", help="start a new peak first")
    ss.add_argument("--state-dir", default=DEFAULT_STATE)
    c = sub.add_parser("change", help="make config change(s) on a device")
    c.add_argument("host")
    c.add_argument("-n", type=int, default=1)
    c.add_argument("--remove", metavar="REGEX", help="remove the lines matching REGEX instead")
    c.add_argument("--add", metavar="LINE", help="add LINE (unless present) instead")
    c.add_argument("--state-dir", default=DEFAULT_STATE)
    sv = sub.add_parser("save", help="copy running-config to startup-config")
    sv.add_argument("host")
    sv.add_argument("--state-dir", default=DEFAULT_STATE)
    r = sub.add_parser("reset", help="back to the generated config")
    r.add_argument("host")
    r.add_argument("--state-dir", default=DEFAULT_STATE)
    f = sub.add_parser("fault", help="set a fault: none|auth_fail|slow|hang|pause|disconnect|answer")
    f.add_argument("host")
    f.add_argument("mode")
    f.add_argument("--delay", type=float, help="slow: seconds per response")
    f.add_argument("--fraction", type=float, help="disconnect: share of output sent before dropping")
    f.add_argument("--text", help="answer: what the device answers ({command}: the command line; empty: nothing)")
    f.add_argument("--commands", help="answer: regex of the command lines answered so (default: every "
                                      "command a backup sends)")
    f.add_argument("--state-dir", default=DEFAULT_STATE)
    a = ap.parse_args(argv)

    if a.cmd == "up":
        if a.foreground or not a.daemon:
            C.up(a.inventory, a.state_dir, daemon=False, pidfile=a.pidfile, personalities_dir=a.personalities,
                 log_level=a.log_level)
            return 0
        pid = C.up(a.inventory, a.state_dir, daemon=True, pidfile=a.pidfile, timeout=a.timeout,
                   personalities_dir=a.personalities, log_level=a.log_level)
        print(f"lab running, pid {pid}")
        return 0
    if a.cmd == "down":
        print("stopped" if C.down(a.state_dir, a.pidfile) else "not running")
        return 0
    if a.cmd == "status":
        st = C.status(a.state_dir, a.pidfile)
        if a.json:
            print(json.dumps(st, indent=1))
            return 0
        print(f"lab: {'running pid %s, rss %s kB' % (st['pid'], st['rss_kb']) if st['running'] else 'stopped'};"
              f" {len(st['devices'])} devices")
        for dv in st["devices"]:
            print(f"  {dv['name']:24} {dv['host']}:{dv['port']:<6} {dv['personality']:10} fault={dv['fault']:10}"
                  f" changes={dv['change_seq']} {'saved' if dv['saved'] else 'UNSAVED'}")
        return 0
    if a.cmd == "sessions":
        lc = LabControl(a.state_dir)
        print(json.dumps(lc.reset_session_peak() if a.reset_peak else lc.sessions(), indent=1))
        return 0
    if a.cmd == "change":
        for ln in C.change(a.state_dir, a.host, a.n, remove=a.remove, add=a.add):
            print(ln)
        return 0
    if a.cmd == "save":
        C.save(a.state_dir, a.host)
        return 0
    if a.cmd == "reset":
        LabControl(a.state_dir).reset(a.host)
        return 0
    if a.cmd == "fault":
        params = {k: v for k, v in (("delay", a.delay), ("fraction", a.fraction), ("text", a.text),
                                    ("commands", a.commands)) if v is not None}
        print(json.dumps(C.fault(a.state_dir, a.host, a.mode, **params)))
        return 0
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:   # e.g. `python -m lab status | head`
        sys.exit(0)
    except C.AddressBusy as exc:  # a busy address or a lab already running: one line, no traceback
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)
