"""Benchmark: DeviceVault end to end, ``devicevault backup --wait`` from the queue to the index (issue 12).

    .venv/bin/python -m bench.e2e                              # 500 lab devices of all twelve platforms
    .venv/bin/python -m bench.e2e --devices 24 --workers 2     # a quick check (a few minutes)
    .venv/bin/python -m bench.e2e --passes unchanged,changed --keep /tmp/e2e

What it runs, outside the measurement: a real ``redis-server`` (``cli.services.RedisServer``) and a simulated
lab of ``--devices`` devices spread round-robin over every platform (``lab.generate_inventory`` with
``platforms="all"``; loopback ``--base``+1..., default 127.0.200.1 and up, i.e. 127.0.200-203 for up to 1000
devices: tests use 127.0.30-99, ``bench.fetch`` 127.0.160-169, ``bench.gitcount`` 127.0.174).

What it measures, inside one *meter* process (``python -m bench.e2e --meter``, driven over a pipe) that made
itself a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``, as ``bench.fetch``'s wrapper does):

1. **baseline** (measured after DeviceVault's passes, whose figures it would otherwise weigh on with the load
   its hundreds of ``ansible-connection`` processes leave behind; printed first): plain ``ansible-playbook -f 50`` with, per platform, one play over the platform's inventory
   group running the platform's ``<os>_command`` module with the configuration command only
   (``bench.fetch.playbooks``: the baseline of ``bench.fetch`` and ../shared/FINDINGS.md), over the same
   devices. The plays run one after another (so its wall time holds twelve play start-ups and tails). Where
   the platform has no vendor module (our own ``cli`` platforms, some community ones), or its module fails on the unmeasured
   warm-up (one device per platform, so nobody pays for cold caches; ``bigip_command`` wants F5's REST
   provider), the play uses ``ansible.netcommon.cli_command``; the report lists the modules. Every device must
   answer with a complete configuration.
2. **DeviceVault**: ``--workers`` ``devicevault worker`` processes (collector and every storage queue) and one
   ``devicevault consumer`` are started by the meter (so every process they start: RQ work horses,
   ansible-runner's ``ansible-playbook``, its worker forks, the double-forked ``ansible-connection`` daemons,
   ``ssh``, ``git``... is a descendant, or is reparented to the meter and reaped by it); default storage
   targets (``git,fs``), the index in SQLite, ``DEVICEVAULT_HOME`` in the work directory. Then per pass one
   ``devicevault backup --wait --json``, also started by the meter: **first** (every device new),
   **unchanged** (nothing changed on the lab) and **changed** (``LabControl.change`` on every device
   first, done by this process, outside the meter). Every device must report the pass's expected status.

How each figure is taken, per pass (the window runs from just before the command starts until it has exited
and every process it left behind has ended, or ``--linger`` seconds, after which those are terminated and
counted as lingering):

- **CPU-s per device**: CPU(t) = user+sys of ``getrusage(RUSAGE_CHILDREN)`` in the meter (everything reaped by
  the meter, with what those had reaped themselves) + for every descendant still alive, utime+stime+cutime+
  cstime from ``/proc/PID/stat`` (its own CPU and that of the children *it* reaped). Every process's CPU is in
  exactly one of those terms at any moment, except while a process is being reaped; so CPU(t) is read only at
  quiet moments (the services idle, the meter's own reaping paused during the read), and a pass costs
  CPU(end) - CPU(start) over the number of devices. The meter's own CPU (sampling, reaping) is not counted.
  The services' idle cost (RQ heartbeats, the retry pump, the consumer's blocking reads) is measured once
  over ``IDLE_SECONDS`` before the passes and printed; it is *not* subtracted (it is part of running
  DeviceVault). Redis (started outside) is reported separately, from ``/proc/<redis pid>/stat``, and the lab
  (outside too) for context only; neither is in CPU-s per device.
- **devices/s**: devices / wall seconds of the ``backup --wait`` command (its start to its exit; ``--wait``
  polls the index every 0.5 s). The baseline: devices / wall seconds of ``ansible-playbook``.
- **peak MB**: the highest summed PSS (``/proc/PID/smaps_rollup``) of all the meter's descendants (the idle
  services included) over samples every 0.5 s during the window.
- **processes started per device**: every process (not thread) created in the window by a descendant of the
  meter, counted exactly from the kernel's process-event connector (netlink ``NETLINK_CONNECTOR``,
  ``CN_IDX_PROC``: a fork event names the parent's and the child's thread group; the meter tracks the set of
  its descendants from those events and counts each fork whose parent is in the set and whose child is a new
  thread group). It needs ``CAP_NET_ADMIN`` in the initial namespaces (root on the dev machine); without it
  the meter falls back to new PIDs seen by the 0.5 s sampler, a lower bound, marked ``>=``. The report also
  breaks them down by command (the name after the process's exec, else its parent's name + "fork").
  "~0 per device (a constant number per batch is fine)" is read as: at most ``PROCS_PER_BATCH_TARGET`` (20)
  per collection batch (``DEVICEVAULT_BATCH_SIZE`` devices): a work horse per collection and storage job,
  ansible-runner's ``ansible-playbook`` and a few helpers, the ``backup`` command itself.
- **git processes**: ``bench.gitcount.GitCounter``'s ``git`` wrapper is first on the services' ``PATH`` and
  logs every git process (git's own children included); git processes per unchanged device = git processes
  of the unchanged pass / devices reported ``unchanged``.

Every DeviceVault figure is also printed as a ratio against the baseline (``x``; for devices/s above 1 is
faster, for the others above 1 is more). The targets of issue 12 are printed as met / NOT met.
Figures: bench/README.md ("End to end").
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import errno
import json
import math
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.fetch import (
    FORKS,
    PR_SET_CHILD_SUBREAPER,
    ROOT,
    SAMPLE_SECONDS,
    _descendants,
    _outputs_from_json,
    _pss_kb,
    _signal,
    check,
    cpu_seconds,
    playbooks,
)

DEFAULT_BASE = "127.0.200.0"
PASSES = ("first", "unchanged", "changed")
EXPECTED = {"first": "changed", "unchanged": "unchanged", "changed": "changed"}
IDLE_SECONDS = 5.0
PROCS_PER_BATCH_TARGET = 20  # processes started per collection batch: "~0 per device, a constant per batch"
TARGETS = {"changed_devices_per_s": 10.0, "changed_cpu_per_device": 0.15, "unchanged_devices_per_s": 15.0}


# --------------------------------------------------------------------------- the meter (a child subreaper)
class ForkEvents:
    """Counts the processes created by the meter's descendants, from the kernel's process-event connector."""

    NETLINK_CONNECTOR, CN_IDX_PROC, CN_VAL_PROC, PROC_CN_MCAST_LISTEN = 11, 1, 1, 1
    FORK, EXEC, EXIT = 0x1, 0x2, 0x80000000
    SO_RCVBUFFORCE = 33

    def __init__(self, root_pid: int):
        self.tracked = {root_pid}
        self.names: list[str] = []          # one per process started, in order
        self.index: dict[int, int] = {}     # tgid -> its position in names
        self.lost = 0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, self.NETLINK_CONNECTOR)
        try:
            self.sock.bind((0, self.CN_IDX_PROC))
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, self.SO_RCVBUFFORCE, 32 << 20)
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
            payload = struct.pack("=I", self.PROC_CN_MCAST_LISTEN)
            cn = struct.pack("=IIIIHH", self.CN_IDX_PROC, self.CN_VAL_PROC, 0, 0, len(payload), 0) + payload
            self.sock.send(struct.pack("=IHHII", 16 + len(cn), 3, 0, 0, 0) + cn)  # NLMSG_DONE
            # the kernel answers with an ack (what=0, its error code; EPERM without CAP_NET_ADMIN); any
            # other event first means we are subscribed
            self.sock.settimeout(2)
            first = self.sock.recv(65536)
            what, = struct.unpack_from("=I", first, 36)
            err = struct.unpack_from("=I", first, 52)[0] if what == 0 else 0
            if err:
                raise OSError(err, os.strerror(err))
        except OSError:
            self.sock.close()
            raise
        self.sock.settimeout(None)
        threading.Thread(target=self._read, name="fork-events", daemon=True).start()

    @staticmethod
    def _comm(pid: int) -> str:
        try:
            with open(f"/proc/{pid}/comm") as fh:
                return fh.read().strip()
        except OSError:
            return "?"

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.lost += 1
                    continue
                return
            what, = struct.unpack_from("=I", data, 36)  # nlmsghdr 16 + cn_msg 20, then proc_event.what
            if what == self.FORK:
                _ppid, ptgid, cpid, ctgid = struct.unpack_from("=IIII", data, 52)
                if ptgid in self.tracked and cpid == ctgid:
                    self.tracked.add(ctgid)
                    self.index[ctgid] = len(self.names)
                    self.names.append(f"{self._comm(ptgid)} fork")
            elif what == self.EXEC:
                pid, tgid = struct.unpack_from("=II", data, 52)
                if tgid in self.index:
                    self.names[self.index[tgid]] = self._comm(tgid)
            elif what == self.EXIT:
                pid, tgid = struct.unpack_from("=II", data, 52)
                if pid == tgid:
                    self.tracked.discard(tgid)
                    self.index.pop(tgid, None)

    def mark(self) -> int:
        return len(self.names)

    def since(self, mark: int) -> collections.Counter:
        return collections.Counter(self.names[mark:])


class Meter:
    """Runs in ``python -m bench.e2e --meter``: starts services and commands, measures them (module doc)."""

    def __init__(self):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
        self.me = os.getpid()
        self.lock = threading.Lock()
        self.exits: dict[int, int] = {}
        self.popens: list[subprocess.Popen] = []   # kept: a dropped Popen would waitpid() in __del__/_cleanup
        self.services: list[subprocess.Popen] = []
        self.seen: set[int] = set()
        self.window = {"pss_kb": 0, "procs": 0, "new": 0}
        try:
            self.forks: ForkEvents | None = ForkEvents(self.me)
        except OSError as exc:
            print(f"meter: no process-event connector ({exc}); processes started are sampled (a lower bound)",
                  file=sys.stderr)
            self.forks = None
        threading.Thread(target=self._reap, name="reaper", daemon=True).start()
        threading.Thread(target=self._sample, name="sampler", daemon=True).start()

    def _reap(self) -> None:
        while True:
            with self.lock:
                try:
                    pid, status, _ = os.wait4(-1, os.WNOHANG)
                except ChildProcessError:
                    pid = 0
            if pid:
                self.exits[pid] = os.waitstatus_to_exitcode(status)
            else:
                time.sleep(0.02)

    def _sample(self) -> None:
        while True:
            pids = _descendants(self.me)
            new = [p for p in pids if p not in self.seen]
            self.seen.update(new)
            self.window["new"] += len(new)
            self.window["procs"] = max(self.window["procs"], len(pids))
            self.window["pss_kb"] = max(self.window["pss_kb"], sum(_pss_kb(p) for p in pids))
            time.sleep(SAMPLE_SECONDS)

    def cpu(self) -> float:
        """CPU-s of everything the meter ever started (see the module doc), read with reaping paused."""
        with self.lock:
            alive = [cpu_seconds(p, reaped_children=True) for p in _descendants(self.me)]
            alive = sum(c for c in alive if not math.isnan(c))  # NaN: gone since the scan
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return alive + usage.ru_utime + usage.ru_stime

    def _popen(self, argv: list[str], env: dict, out: str, mode: str = "wb", **kw) -> subprocess.Popen:
        with open(out, mode) as fh:
            proc = subprocess.Popen(argv, cwd=str(ROOT), env={**os.environ, **env}, stdout=fh,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw)
        self.popens.append(proc)
        return proc

    def op_start(self, argv: list[str], env: dict, out: str) -> dict:
        proc = self._popen(argv, env, out, "ab", start_new_session=True)
        self.services.append(proc)
        return {"pid": proc.pid}

    def op_idle(self, seconds: float) -> dict:
        before = self.cpu()
        time.sleep(seconds)
        return {"cpu_per_s": (self.cpu() - before) / seconds}

    def op_run(self, argv: list[str], env: dict, out: str, linger: float) -> dict:
        resident = set(_descendants(self.me))
        mark = self.forks.mark() if self.forks else 0
        cpu_before = self.cpu()
        self.window.update(pss_kb=0, procs=0, new=0)
        started = time.monotonic()
        proc = self._popen(argv, env, out)
        while proc.pid not in self.exits:
            time.sleep(0.05)
        wall = time.monotonic() - started
        # the window ends when every process the command left behind has ended (or is terminated)
        # (those still there after ``linger`` seconds are terminated, once: not what a service starts later)
        deadline = time.monotonic() + linger
        while (lingering := [p for p in _descendants(self.me) if p not in resident]) and time.monotonic() < deadline:
            time.sleep(0.1)
        for sig in (signal.SIGTERM, signal.SIGKILL) if lingering else ():
            for pid in lingering:
                _signal(pid, sig)
            end = time.monotonic() + 10
            while set(lingering) & set(_descendants(self.me)) and time.monotonic() < end:
                time.sleep(0.1)
        settle = time.monotonic() - started - wall
        cpu = self.cpu() - cpu_before
        time.sleep(0.5)  # the last fork events of the window reach the reader
        if self.forks:
            by_name, exact = self.forks.since(mark), self.forks.lost == 0
        else:
            by_name, exact = collections.Counter({"(sampled)": self.window["new"]}), False
        return {"rc": self.exits[proc.pid], "wall": wall, "settle": settle, "cpu": cpu,
                "started": sum(by_name.values()), "by_name": dict(by_name.most_common()), "exact": exact,
                "peak_pss_mb": self.window["pss_kb"] / 1024, "peak_procs": self.window["procs"],
                "lingering": len(lingering)}

    def op_stop(self) -> dict:
        for proc in self.services:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except OSError:
                pass
        deadline = time.monotonic() + 30
        while _descendants(self.me) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in _descendants(self.me):
            _signal(pid, signal.SIGKILL)
        return {"left": len(_descendants(self.me))}

    def serve(self) -> None:
        for line in sys.stdin:
            request = json.loads(line)
            op = request.pop("op")
            reply = getattr(self, f"op_{op}")(**request)
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
            if op == "stop":
                return


class MeterClient:
    def __init__(self, log: Path):
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.e2e", "--meter"], cwd=str(ROOT),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(log, "ab"),
                                     text=True)

    def __call__(self, op: str, **args) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the meter died during {op!r} (exit {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self("stop")
            finally:
                self.proc.stdin.close()
                self.proc.wait(60)


# --------------------------------------------------------------------------- the driver
def _platform_hosts(inventory: Path) -> dict[str, list[str]]:
    import yaml

    children = yaml.safe_load((inventory / "hosts.yml").read_text())["all"]["children"]
    return {name: list(group["hosts"]) for name, group in children.items() if not name.startswith("site_")}


def baseline_playbook(by_platform: dict[str, list[str]], generic: set[str] = frozenset()) -> tuple[str, dict]:
    """One play per platform group, each ``bench.fetch``'s baseline task (``ansible.netcommon.cli_command`` for
    the platforms in ``generic``); also {platform: (Platform, commands, module)}."""
    from jobs.collect.platforms import get_platform

    plays, info = [], {}
    for name in by_platform:
        platform = get_platform(name)
        text, commands, module = playbooks(platform)["baseline"]
        play = json.loads(text)[0]
        if name in generic:
            module = "cli_command"
            play["tasks"] = [{"name": "Collect configuration", "ansible.netcommon.cli_command": {"command": commands[0]}}]
        # a play whose every host failed would end the playbook: the failure is read from the result instead
        play["tasks"][0]["ignore_errors"] = True
        play.update(name=f"baseline {name} ({module})", hosts=name)
        plays.append(play)
        info[name] = (platform, commands, module)
    return json.dumps(plays, indent=1), info


def baseline_answers(text: str, hosts: list[str]) -> dict[str, dict]:
    """``bench.fetch._outputs_from_json`` over every play of the json callback's output."""
    try:
        data = json.loads(text[text.index("{"):])
        merged = {h: r for play in data["plays"] for task in play["tasks"][:1] for h, r in task["hosts"].items()}
    except (ValueError, KeyError):
        return _outputs_from_json(text, hosts)
    return _outputs_from_json(json.dumps({"plays": [{"tasks": [{"hosts": merged}]}]}), hosts)


def _wait_for_services(redis_url: str, workers: int, consumer: str, timeout: float = 120) -> None:
    """Until ``workers`` RQ workers are registered and ``consumer`` has read from the index consumer's group."""
    from redis import Redis
    from rq import Worker

    from jobs.streams.consumer import GROUP
    from jobs.streams.results import DEVICE_RESULTS_STREAM

    def consumer_ready(redis: Redis) -> bool:
        try:
            return any(c["name"] in (consumer, consumer.encode()) for c in redis.xinfo_consumers(DEVICE_RESULTS_STREAM, GROUP))
        except Exception:  # noqa: BLE001 - no stream or group yet
            return False

    deadline = time.monotonic() + timeout
    with Redis.from_url(redis_url) as redis:
        while Worker.count(connection=redis) < workers or not consumer_ready(redis):
            if time.monotonic() > deadline:
                raise SystemExit(f"{workers} worker(s) and consumer {consumer} not ready within {timeout:.0f} s")
            time.sleep(0.5)


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base else "-"


def report(rows: list[dict], n: int, batches: int, idle: float) -> list[str]:
    """The table (the baseline, if measured, first) and the processes started by command."""
    base = rows[0] if rows[0].get("baseline") else None
    lines = [f"{'':<26}{'devices/s':>10}{'wall s':>8}{'CPU-s/dev':>10}{'peak MB':>9}{'procs/dev':>10}"
             f"{'git/dev':>9}{'redis CPU-s':>12}{'lab CPU-s':>10}   vs baseline: dev/s  CPU  MB  procs   statuses"]
    for r in rows:
        per_s, cpu, procs = n / r["wall"], r["cpu"] / n, r["started"] / n
        git = "-" if r.get("git") is None else f"{r['git_per_device']:.2f}"
        redis = "-" if r.get("redis_cpu") is None else f"{r['redis_cpu']:.1f}"
        ge = "" if r["exact"] else ">="
        vs = "" if base is None or r is base else (f"{_ratio(per_s, n / base['wall']):>8} {_ratio(cpu, base['cpu'] / n):>6}"
                                   f" {_ratio(r['peak_pss_mb'], base['peak_pss_mb']):>6}"
                                   f" {_ratio(procs, base['started'] / n):>6}")
        lines.append(f"{r['label']:<26}{per_s:>10.2f}{r['wall']:>8.1f}{cpu:>10.3f}{r['peak_pss_mb']:>9.0f}"
                     f"{ge + f'{procs:.2f}':>10}{git:>9}{redis:>12}"
                     f"{r['lab_cpu']:>10.1f}   {vs:<31}{r.get('statuses', '')}")
    if base is not None:
        lines.append(f"  baseline: plain ansible-playbook -f {FORKS}, one play per platform (one after another), the"
                     f" configuration command only: {base['modules']}")
    lines.append(f"  services idle: {idle:.3f} CPU-s/s (in every pass's CPU, not subtracted); a pass's window includes"
                 f" its settle time; {batches} collection batch(es) per pass")
    for r in rows:
        per_batch = r["started"] / batches if r is not base else None
        top = ", ".join(f"{k} {v}" for k, v in list(r["by_name"].items())[:12])
        lines.append(f"  processes started, {r['label']}: {r['started']}"
                     + (f" ({per_batch:.1f} per batch)" if per_batch is not None else "")
                     + f": {top}" + (f"; lingering {r['lingering']}" if r["lingering"] else "")
                     + (f"; settle {r['settle']:.1f} s" if r["settle"] > 0.5 else ""))
    return lines


def targets(by_pass: dict[str, dict], n: int, batches: int) -> list[str]:
    def line(ok: bool | None, text: str) -> str:
        return f"  [{'met' if ok else 'NOT met' if ok is not None else 'not measured'}] {text}"

    changed, unchanged = by_pass.get("changed"), by_pass.get("unchanged")
    out = ["targets (issue 12):"]
    if changed:
        out.append(line(n / changed["wall"] >= TARGETS["changed_devices_per_s"],
                        f"all changed: >= {TARGETS['changed_devices_per_s']:g} devices/s ({n / changed['wall']:.2f})"))
        out.append(line(changed["cpu"] / n <= TARGETS["changed_cpu_per_device"],
                        f"all changed: <= {TARGETS['changed_cpu_per_device']:g} CPU-s per device for everything"
                        f" DeviceVault runs ({changed['cpu'] / n:.3f})"))
    else:
        out.append(line(None, "all changed: devices/s and CPU-s per device (pass 'changed' not run)"))
    if unchanged:
        out.append(line(n / unchanged["wall"] >= TARGETS["unchanged_devices_per_s"],
                        f"unchanged: >= {TARGETS['unchanged_devices_per_s']:g} devices/s ({n / unchanged['wall']:.2f})"))
        out.append(line(unchanged["git"] == 0, f"unchanged: 0 git processes per unchanged device "
                        f"({unchanged['git']} git processes, {unchanged['git_per_device']:.2f} per device)"))
    else:
        out.append(line(None, "unchanged: devices/s, git processes (pass 'unchanged' not run)"))
    for name, r in by_pass.items():
        ge = "" if r["exact"] else ">="
        out.append(line(r["started"] <= PROCS_PER_BATCH_TARGET * batches,
                        f"{name}: processes started per device ~0, a constant per batch (<= {PROCS_PER_BATCH_TARGET} per"
                        f" batch of up to {-(-n // batches)} devices) ({ge}{r['started'] / batches:.1f} per batch,"
                        f" {ge}{r['started'] / n:.2f} per device)"))
    return out


def main(argv: list[str] | None = None) -> int:
    from jobs.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--passes", default=",".join(PASSES), help="comma separated, of %(default)s")
    parser.add_argument("--workers", type=int, default=Settings.load().workers,
                        help="devicevault worker processes (default: DEVICEVAULT_WORKERS's, %(default)s here)")
    parser.add_argument("--batch-size", type=int, help="DEVICEVAULT_BATCH_SIZE (default: DeviceVault's, 50)")
    parser.add_argument("--base", default=DEFAULT_BASE, help="loopback base address of the lab (default %(default)s)")
    parser.add_argument("--linger", type=float, default=10.0,
                        help="seconds left-behind processes get to end after a pass before they are terminated")
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain ansible-playbook baseline")
    parser.add_argument("--keep", type=Path, help="directory for everything (kept); default: a temporary one")
    args = parser.parse_args(argv)
    passes = [p for p in args.passes.split(",") if p]
    if not passes or any(p not in PASSES for p in passes):
        parser.error(f"--passes: choose from {','.join(PASSES)}")

    from bench.gitcount import GitCounter
    from cli.services import RedisServer, free_port
    from lab.control import LabControl
    from lab.generate_inventory import generate_inventory
    from lab.testing import ANSIBLE_PLAYBOOK, ansible_env, start_lab, stop_lab

    work = args.keep or Path(tempfile.mkdtemp(prefix="devicevault-bench-e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=work))
    counter = GitCounter(run_dir / "git")
    inventory, lab_state, home = run_dir / "inventory", run_dir / "lab", run_dir / "home"
    hosts = generate_inventory(args.devices, inventory, port=free_port(), base=args.base, platforms="all")
    by_platform = _platform_hosts(inventory)
    n = len(hosts)
    batch_size = args.batch_size or Settings.load().batch_size
    batches = math.ceil(n / batch_size)
    load_start = os.getloadavg()
    print(f"e2e benchmark: {n} devices of {len(by_platform)} platforms, {args.workers} worker(s), batches of"
          f" {batch_size}, passes {','.join(passes)}, lab on {args.base}+, work in {run_dir}", flush=True)
    redis = RedisServer(run_dir / "redis", free_port()).start()
    redis_pid = int(redis.pidfile.read_text().strip())
    started = time.monotonic()
    lab_pid = start_lab(inventory, lab_state, timeout=max(120, n))
    print(f"  lab up (pid {lab_pid}, {time.monotonic() - started:.0f} s); redis pid {redis_pid}", flush=True)
    meter = MeterClient(run_dir / "meter.log")
    rows, by_pass, problems = [], {}, []
    try:
        env = {"PATH": f"{counter.bin}{os.pathsep}{os.environ.get('PATH', '')}", "LC_ALL": "C.UTF-8",
               "LANG": "C.UTF-8", "PYTHONPATH": str(ROOT), "DEVICEVAULT_HOME": str(home),
               "DEVICEVAULT_REDIS_URL": redis.url, "DEVICEVAULT_INVENTORY": str(inventory),
               "DEVICEVAULT_LOG_FORMAT": "json", "DEVICEVAULT_BATCH_SIZE": str(batch_size)}
        home.mkdir()
        cli = [sys.executable, "-m", "cli"]
        for i in range(1, args.workers + 1):
            meter("start", argv=[*cli, "worker", "--name", f"e2e-{os.getpid()}-{i}"], env=env,
                  out=str(home / f"worker-{i}.log"))
        consumer = f"e2e-{os.getpid()}"
        meter("start", argv=[*cli, "consumer", "--name", consumer], env=env, out=str(home / "consumer.log"))
        _wait_for_services(redis.url, args.workers, consumer)
        idle = meter("idle", seconds=IDLE_SECONDS)["cpu_per_s"]
        for name in passes:
            if name == "changed":
                control = LabControl(lab_state)
                for host in hosts:
                    control.change(host)
            counter.take()
            out = run_dir / f"pass-{name}.json"
            lab_before, redis_before = cpu_seconds(lab_pid), cpu_seconds(redis_pid)
            stats = meter("run", argv=[*cli, "backup", "--wait", "--json"], env=env, out=str(out), linger=args.linger)
            stats["lab_cpu"], stats["redis_cpu"] = cpu_seconds(lab_pid) - lab_before, cpu_seconds(redis_pid) - redis_before
            stats["git"] = len(counter.take())
            try:
                text = out.read_text()
                results = json.loads(text[text.index("{"):])["results"]
            except (ValueError, KeyError):
                raise SystemExit(f"pass {name}: backup exited {stats['rc']} without a result; see {out}")
            statuses = collections.Counter(r["status"] for r in results)
            wrong = [f"pass {name}: {r['device']}: {r['status']} (expected {EXPECTED[name]}) {r.get('error') or ''}"
                     for r in results if r["status"] != EXPECTED[name]]
            problems += wrong
            expected_n = statuses.get(EXPECTED[name], 0)
            stats["git_per_device"] = stats["git"] / expected_n if expected_n else float("nan")
            stats.update(label=f"DeviceVault: {name}", statuses=dict(sorted(statuses.items())))
            rows.append(stats)
            by_pass[name] = stats
            print(f"  {name}: {stats['wall']:.1f} s, {stats['cpu']:.1f} CPU-s, {dict(sorted(statuses.items()))},"
                  f" {stats['started']} processes started, {stats['git']} git", flush=True)
        # the baseline after DeviceVault's passes: its hundreds of ansible-connection processes leave load
        # behind them that would slow the passes measured after it
        if not args.no_baseline:
            base_env = {k: v for k, v in ansible_env().items() if os.environ.get(k) != v}
            info: dict = {}

            def baseline(limit: list[str], name: str) -> tuple[dict, list[str]]:
                out = run_dir / f"{name}.out"
                argv = [ANSIBLE_PLAYBOOK, "-f", str(FORKS), "-i", str(inventory), "--limit", ",".join(limit),
                        str(run_dir / "baseline.yml")]
                lab_before = cpu_seconds(lab_pid)
                stats = meter("run", argv=argv, env=base_env, out=str(out), linger=args.linger)
                stats["lab_cpu"] = cpu_seconds(lab_pid) - lab_before
                answers = baseline_answers(out.read_text(errors="replace"), limit)
                found = []
                for platform, (p, commands, _) in info.items():
                    mine = [h for h in by_platform[platform] if h in limit]
                    found += check(name, {h: answers[h] for h in mine}, mine, commands, p)
                return stats, found

            # warm-up, one device per platform; a vendor module that does not work over network_cli (bigip_command
            # wants its REST provider) is replaced by the generic ansible.netcommon.cli_command
            generic: set[str] = set()
            for _ in range(2):
                text, info = baseline_playbook(by_platform, generic)
                (run_dir / "baseline.yml").write_text(text)
                _, found = baseline([hs[0] for hs in by_platform.values()], "warm-up")
                failing = {platform for platform, hs in by_platform.items() if any(f": {hs[0]}: " in p for p in found)}
                if not failing or failing <= generic:
                    break
                generic |= failing
            if found:
                print("\n".join(found), file=sys.stderr)
                return 1
            modules = collections.Counter(module for _, _, module in info.values())
            stats, found = baseline(hosts, "baseline")
            problems += found
            stats.update(label="baseline (ansible-playbook)", statuses=f"{n - len(found)}/{n} answered",
                         modules=", ".join(f"{m} x{c}" for m, c in modules.items()), baseline=True)
            rows.insert(0, stats)
            print(f"  baseline: {stats['wall']:.1f} s, {stats['cpu']:.1f} CPU-s, {n - len(found)}/{n} devices answered",
                  flush=True)
    finally:
        meter.close()
        stop_lab(lab_state)
        redis.stop()
    load_end = os.getloadavg()
    print()
    print(f"{n} devices ({len(by_platform)} platforms), {args.workers} worker(s), batches of {batch_size}, forks {FORKS},"
          f" {time.strftime('%Y-%m-%d %H:%M')}, load average {load_start[0]:.1f} at the start, {load_end[0]:.1f} at"
          f" the end ({os.cpu_count()} CPUs)")
    if rows:
        print("\n".join(report(rows, n, batches, idle if by_pass else 0.0)))
        print("  CPU-s/dev = every process the meter started (child subreaper); redis and lab CPU-s are not in it;"
              " git/dev = git processes per device of the pass's expected status")
    if by_pass:
        print("\n".join(targets(by_pass, n, batches)))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    if problems:
        print(f"\nFAILED: {len(problems)} problem(s):\n  " + "\n  ".join(problems[:20]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--meter"]:
        Meter().serve()
        sys.exit(0)
    sys.exit(main())
