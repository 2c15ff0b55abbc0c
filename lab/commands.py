"""Plain functions behind ``python -m lab`` and ``devicevault lab ...``.

    up(inventory, state_dir, daemon=True, timeout=60) -> pid
    down(state_dir, timeout=10) -> bool
    status(state_dir) -> dict
    change(state_dir, host, n=1) -> list[str]
    save(state_dir, host) -> None
    fault(state_dir, host, mode, **params) -> dict
    wait_ready(inventory, timeout=60, state_dir=None) -> None
"""
from __future__ import annotations

import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from jobs import processes
from jobs.settings import SOURCE_ROOT

from .control import LabControl

LOG_NAME = "lab.log"
PID_NAME = "lab.pid"


def _pidfile(state_dir, pidfile=None) -> Path:
    return Path(pidfile) if pidfile else Path(state_dir) / PID_NAME


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (``jobs.processes.alive``), reaping it first if it is our own exited child."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    return processes.alive(pid)


def read_pid(state_dir, pidfile=None) -> int | None:
    """Pid of the running lab of ``state_dir`` or None."""
    try:
        pid = int(_pidfile(state_dir, pidfile).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def endpoints(state_dir=None, inventory=None) -> list[tuple[str, str, int]]:
    """(name, address, port) of every served device, from ``lab.json`` in ``state_dir`` or the inventory."""
    if state_dir and (Path(state_dir) / "lab.json").exists():
        data = json.loads((Path(state_dir) / "lab.json").read_text())
        return [(d["name"], d["host"], d["port"]) for d in data["devices"]]
    from .inventory import load_inventory
    from .personality import personality_for
    return [(d.name, d.host, d.port) for d in load_inventory(inventory) if personality_for(d.network_os, platform=d.platform)]


class AddressBusy(OSError):
    """A lab device's address cannot be listened on; the message names the address, the device and the inventory."""

    def __str__(self) -> str:
        return self.strerror


def check_addresses(inventory) -> None:
    """Raise :class:`AddressBusy` for the first device of ``inventory`` whose address and port cannot be bound
    (in use, or not an address of this machine), before any lab process starts."""
    for name, addr, port in endpoints(None, inventory):
        with socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((addr, port))
            except OSError as exc:
                raise AddressBusy(exc.errno, f"lab: cannot listen on {addr}:{port} for {name} (inventory {inventory}): "
                                  f"{exc.strerror}") from None


def _probe(addr: str, port: int) -> bool:
    try:
        with socket.create_connection((addr, port), timeout=1) as s:
            s.settimeout(2)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def wait_ready(inventory=None, timeout: float = 60, state_dir=None, pid: int | None = None) -> None:
    """Block until every lab device (from the inventory, or ``state_dir``'s lab.json) accepts SSH.

    Raises TimeoutError (or RuntimeError if ``pid`` died meanwhile).
    """
    deadline = time.monotonic() + timeout
    pending = None
    while time.monotonic() < deadline:
        if pid is not None and not _alive(pid):
            raise RuntimeError(f"lab process {pid} exited during startup" + _log_tail(state_dir))
        if pending is None:
            if state_dir and not (Path(state_dir) / "ready.json").exists() and pid is not None:
                time.sleep(0.2)
                continue
            pending = endpoints(state_dir if pid is not None or inventory is None else None, inventory)
        pending = [e for e in pending if not _probe(e[1], e[2])]
        if not pending:
            return
        time.sleep(0.2)
    raise TimeoutError(f"lab not ready after {timeout}s" + (f"; e.g. {pending[:3]} not answering" if pending else ""))


def _log_tail(state_dir, n=20) -> str:
    try:
        lines = (Path(state_dir) / LOG_NAME).read_text().splitlines()[-n:]
        return ":\n" + "\n".join(lines)
    except (OSError, TypeError):
        return ""


def up(inventory, state_dir, daemon: bool = True, pidfile=None, timeout: float = 120,
       personalities_dir: str | None = None, log_level: str = "INFO") -> int:
    """Start the lab serving every device of ``inventory``; state, host key and ``lab.log`` in ``state_dir``.

    daemon=True: start a background process (new session) and return its pid only
    once all devices accept TCP/SSH connections (raises on failure/timeout).
    daemon=False: serve in this process until SIGTERM/SIGINT, then return our pid.
    """
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    old = read_pid(state_dir, pidfile)
    if old and old != os.getpid():
        raise AddressBusy(errno.EADDRINUSE, f"lab: already running (pid {old}) for {state_dir}; its devices hold "
                                            "their addresses (stop it first: lab down)")
    check_addresses(inventory)
    (state_dir / "ready.json").unlink(missing_ok=True)
    if not daemon:
        _setup_logging(state_dir, log_level)
        _pidfile(state_dir, pidfile).write_text(str(os.getpid()))
        from .server import serve
        if personalities_dir:  # every part of the lab (templates, control) sees the extra personalities
            os.environ["LAB_PERSONALITIES_DIR"] = str(Path(personalities_dir).resolve())
        try:
            serve(inventory, state_dir, personalities_dir)
        finally:
            _pidfile(state_dir, pidfile).unlink(missing_ok=True)
        return os.getpid()
    cmd = [sys.executable, "-m", "lab", "up", "--inventory", str(inventory), "--state-dir", str(state_dir),
           "--foreground", "--log-level", log_level]
    if pidfile:
        cmd += ["--pidfile", str(pidfile)]
    if personalities_dir:
        cmd += ["--personalities", str(personalities_dir)]
    env = dict(os.environ, LC_ALL=os.environ.get("LC_ALL", "C.UTF-8"))
    if personalities_dir:
        env["LAB_PERSONALITIES_DIR"] = str(Path(personalities_dir).resolve())
    root = str(SOURCE_ROOT)  # the same lab package as this process (a checkout or an installed one)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(state_dir / LOG_NAME, "ab") as logf:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env, cwd=os.getcwd())
    _pidfile(state_dir, pidfile).write_text(str(proc.pid))
    try:
        wait_ready(inventory, timeout=timeout, state_dir=state_dir, pid=proc.pid)
    except BaseException:
        _kill(proc.pid)
        raise
    return proc.pid


def _kill(pid: int, timeout: float = 10) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.monotonic() + timeout
    while time.monotonic() < end and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def down(state_dir, pidfile=None, timeout: float = 10) -> bool:
    """Stop the lab of ``state_dir`` (SIGTERM, then SIGKILL). Returns False if none was running."""
    pid = read_pid(state_dir, pidfile)
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"lab" not in cmdline:
            raise RuntimeError(f"pid {pid} in pidfile is not a lab process")
    except FileNotFoundError:
        return False
    _kill(pid, timeout)
    _pidfile(state_dir, pidfile).unlink(missing_ok=True)
    (Path(state_dir) / "ready.json").unlink(missing_ok=True)
    return True


def status(state_dir, pidfile=None) -> dict:
    """{'running': bool, 'pid': int|None, 'devices': [{name, host, port, personality, fault, change_seq, saved}], 'rss_kb': int}"""
    pid = read_pid(state_dir, pidfile)
    out = {"running": bool(pid), "pid": pid, "devices": [], "rss_kb": None}
    if pid:
        try:
            for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
                if ln.startswith("VmRSS:"):
                    out["rss_kb"] = int(ln.split()[1])
        except OSError:
            pass
    lc = LabControl(state_dir)
    for h in lc.hosts():
        st = lc.state(h)
        out["devices"].append({"name": h, "host": st.get("address"), "port": st.get("port"),
                               "personality": st.get("personality"), "fault": st.get("fault", {}).get("mode"),
                               "change_seq": st.get("change_seq", 0), "saved": st["running"] == st["startup"]})
    return out


def change(state_dir, host: str, n: int = 1, *, remove: str | None = None, add: str | None = None) -> list[str]:
    """Make ``n`` config changes on ``host`` (see :meth:`LabControl.change`); returns the changed lines
    (``+ line`` added, ``- line`` removed). ``remove`` (a regex: its lines go, :meth:`LabControl.remove_lines`)
    or ``add`` (a line, :meth:`LabControl.add_line`) make that change instead."""
    lab = LabControl(state_dir)
    if remove is None and add is None:
        return [f"+ {line}" for line in lab.change(host, n)]
    changed = [f"- {line}" for line in lab.remove_lines(host, remove)] if remove is not None else []
    if add is not None and lab.add_line(host, add):
        changed.append(f"+ {add}")
    return changed


def save(state_dir, host: str) -> None:
    """startup-config := running-config on ``host``."""
    LabControl(state_dir).save(host)


def fault(state_dir, host: str, mode: str, **params) -> dict:
    """Set fault ``mode`` (none|auth_fail|slow|hang|disconnect) on ``host``; params e.g. delay=5, fraction=0.4."""
    return LabControl(state_dir).set_fault(host, mode, **params)


def _setup_logging(state_dir, level="INFO"):
    logging.basicConfig(filename=str(Path(state_dir) / LOG_NAME), level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
