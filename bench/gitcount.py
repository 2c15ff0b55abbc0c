"""Benchmark: git processes per backed-up device, the tree at a baseline revision against the current one.

    .venv/bin/python -m bench.gitcount                          # 20 IOS devices, baseline e3571df (~3-5 min)
    .venv/bin/python -m bench.gitcount --devices 40 --batch-size 10 --baseline HEAD~3
    .venv/bin/python -m bench.gitcount --no-baseline            # only the current tree

What it runs, once per tree (the ``--baseline`` revision, checked out with ``git worktree add --detach``
under /tmp, then the current work tree), against the same simulated lab (``--devices`` devices of one
platform on loopback ``--base``+1...; keep it away from the other labs of this machine: tests use
127.0.30-127.0.99, ``bench.fetch`` 127.0.160-169) and the same real ``redis-server`` (one database per
tree), with a fresh ``DEVICEVAULT_HOME`` (so a fresh git repository and index) each:

1. one ``devicevault worker`` (collector and every storage queue) and one ``devicevault consumer``, both
   ``python -m cli`` started *from that tree* (cwd and ``PYTHONPATH`` = the tree: the .venv's editable
   install of /work/main comes after ``sys.path`` in the import order; the benchmark checks where ``cli``,
   ``jobs`` and ``storage`` are imported from before it starts);
2. ``devicevault backup --wait --json`` three times, driven through the CLI only:
   **first** (every device new), **changed** (after ``LabControl.change`` on every device) and
   **unchanged** (nothing changed on the lab).

How it counts: a ``git`` wrapper script is first on the ``PATH`` of every DeviceVault process (worker, its
work horses, consumer, CLI); each invocation leaves one small file (parent pid and arguments) and then
``exec``s the real git. GitPython and ``subprocess`` both find ``git`` through ``PATH``, so every git process
DeviceVault starts is counted, including GitPython's ``git version`` on import; git's own internal children
(run from git's exec-path) are not. Counts are taken between the start of a backup and one quiet second
after ``--wait`` returned (a run finishes only when every new version has an outcome on every target).
Per changed device = git processes of the *changed* backup / devices reported ``changed``; per unchanged
device = git processes of the *unchanged* backup / devices reported ``unchanged``; per batch = git processes
of a backup / storage jobs that ran on ``storage.git`` during it (RQ's finished and failed registries).
"by command" lists the git sub-commands of each backup.

Figures are in bench/README.md ("Git processes").
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BASE = "127.0.174.0"
DEFAULT_BASELINE = "e3571df"
PHASES = ("first", "changed", "unchanged")

WRAPPER = """#!/bin/sh
# counts git processes for bench.gitcount: one file per invocation, then the real git (which keeps
# GIT_EXEC_PATH pointing here, so the git processes git itself starts come back through this script)
f="{logdir}/$$"
while [ -e "$f" ]; do f="$f+"; done
printf '%s\\037' "$PPID" "$@" > "$f"
GIT_EXEC_PATH="{execdir}"; export GIT_EXEC_PATH
exec {git} "$@"
"""


@dataclass
class Phase:
    name: str
    statuses: dict[str, int]
    git: list[list[str]]            # one argv per git process
    storage_jobs: int               # storage.git jobs that ran during the phase
    seconds: float

    @property
    def commands(self) -> collections.Counter:
        return collections.Counter(
            (f"{_subcommand(argv[1:])} (by git)" if argv[:1] == ["(git)"] else _subcommand(argv)) for argv in self.git
        )


@dataclass
class TreeResult:
    label: str
    phases: dict[str, Phase] = field(default_factory=dict)

    def per_device(self, phase: str, status: str) -> float | None:
        p = self.phases[phase]
        n = p.statuses.get(status, 0)
        return len(p.git) / n if n else None

    def per_batch(self, phase: str) -> float | None:
        p = self.phases[phase]
        return len(p.git) / p.storage_jobs if p.storage_jobs else None


def _subcommand(argv: list[str]) -> str:
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-c", "-C", "--git-dir", "--work-tree", "--namespace"):
            i += 2
            continue
        if a.startswith("-"):
            i += 1
            continue
        return a
    return "(none)"


class GitCounter:
    def __init__(self, workdir: Path):
        self.bin = workdir / "bin"
        self.logdir = workdir / "gitlog"
        self.bin.mkdir(parents=True)
        self.logdir.mkdir()
        real = shutil.which("git")
        if not real:
            raise SystemExit("git is not installed")
        exec_path = Path(subprocess.run([real, "--exec-path"], capture_output=True, text=True, check=True).stdout.strip())
        # the wrapper's directory doubles as git's exec-path: every helper of the real one, linked
        for helper in exec_path.iterdir():
            if helper.name != "git":
                (self.bin / helper.name).symlink_to(helper)
        script = self.bin / "git"
        script.write_text(WRAPPER.format(logdir=self.logdir, git=exec_path / "git", execdir=self.bin))
        script.chmod(0o755)

    def take(self) -> list[list[str]]:
        """Argument lists of the git processes logged since the last call (and forget them); an argument
        list of a process that a git process started (its parent is a logged git) begins with "(git)"."""
        logged = []
        for entry in sorted(self.logdir.iterdir()):
            fields = entry.read_bytes().decode("utf-8", "replace").split("\x1f")
            logged.append((entry.name.rstrip("+"), fields[0], fields[1:-1]))
            entry.unlink()
        pids = {pid for pid, _ppid, _argv in logged}
        return [(["(git)"] if ppid in pids else []) + argv for _pid, ppid, argv in logged]

    def settle(self, quiet: float = 1.0, limit: float = 20.0) -> None:
        """Wait until no git process was logged for ``quiet`` seconds."""
        deadline = time.monotonic() + limit
        last = -1
        while time.monotonic() < deadline:
            now = len(os.listdir(self.logdir))
            if now == last:
                return
            last = now
            time.sleep(quiet)


class Tree:
    """DeviceVault run from one source tree: its worker, its consumer, its CLI."""

    def __init__(self, label: str, root: Path, home: Path, env: dict[str, str]):
        self.label, self.root, self.home = label, root, home
        self.env = {**os.environ, "LC_ALL": "C.UTF-8", "PYTHONPATH": str(root), "DEVICEVAULT_HOME": str(home), **env}
        self.env.pop("VIRTUAL_ENV", None)
        self.procs: list[subprocess.Popen] = []

    def run(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cli", *args], cwd=self.root, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def check_imports(self) -> None:
        code = "import cli, jobs, storage, json; print(json.dumps([cli.__file__, jobs.__file__, storage.__file__]))"
        out = subprocess.run([sys.executable, "-c", code], cwd=self.root, env=self.env, capture_output=True,
                             text=True, check=True).stdout
        for path in json.loads(out):
            if not Path(path).resolve().is_relative_to(self.root.resolve()):
                raise SystemExit(f"{self.label}: {path} is not imported from {self.root}")

    def start(self, *args: str, name: str) -> None:
        log = open(self.home / f"{name}.log", "ab")
        self.procs.append(subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=self.root, env=self.env,
                                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        log.close()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def _storage_jobs(redis_url: str) -> set[str]:
    from redis import Redis
    from jobs.queues import Queue

    with Redis.from_url(redis_url) as redis:
        queue = Queue("storage.git", connection=redis)
        return set(queue.finished_job_registry.get_job_ids()) | set(queue.failed_job_registry.get_job_ids())


def _backup(tree: Tree, counter: GitCounter, redis_url: str, name: str) -> Phase:
    counter.take()
    jobs_before = _storage_jobs(redis_url)
    started = time.monotonic()
    proc = tree.run("backup", "--wait", "--json")
    seconds = time.monotonic() - started
    if proc.returncode not in (0, 1) or not proc.stdout.lstrip().startswith("{"):
        raise SystemExit(f"{tree.label}: backup ({name}) exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    counter.settle()
    statuses = collections.Counter(r["status"] for r in json.loads(proc.stdout)["results"])
    return Phase(name, dict(statuses), counter.take(), len(_storage_jobs(redis_url) - jobs_before), seconds)


def measure(label: str, root: Path, workdir: Path, counter: GitCounter, redis_url: str, inventory: Path,
            lab_state: Path, hosts: list[str], batch_size: int) -> TreeResult:
    from lab.control import LabControl

    home = workdir / label
    home.mkdir()
    env = {
        "PATH": f"{counter.bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "DEVICEVAULT_REDIS_URL": redis_url,
        "DEVICEVAULT_INVENTORY": str(inventory),
        "DEVICEVAULT_BATCH_SIZE": str(batch_size),
        "DEVICEVAULT_DEVICE_TIMEOUT": "20",
    }
    tree = Tree(label, root, home, env)
    tree.check_imports()
    result = TreeResult(label)
    try:
        tree.start("worker", "--name", f"gitcount-{label}-{os.getpid()}", name="worker")
        tree.start("consumer", "--name", f"gitcount-{label}", name="consumer")
        for phase in PHASES:
            if phase == "changed":
                control = LabControl(lab_state)
                for host in hosts:
                    control.change(host)
            result.phases[phase] = p = _backup(tree, counter, redis_url, phase)
            print(f"  {label:>9} {phase:<9} {dict(sorted(p.statuses.items()))}  git processes {len(p.git)}, "
                  f"storage.git jobs {p.storage_jobs}, {p.seconds:.0f} s", flush=True)
    finally:
        tree.stop()
    return result


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "-"
    if b == 0:
        return "-" if a == 0 else "all gone"
    return f"{a / b:.1f}x fewer" if a >= b else f"{b / a:.1f}x more"


def report(results: list[TreeResult], devices: int) -> str:
    lines = [f"git processes ({devices} devices)".ljust(36) + "".join(r.label.rjust(22) for r in results)
             + ("   ratio" if len(results) == 2 else "")]
    rows = [
        ("first backup, per new device", lambda r: r.per_device("first", "changed")),
        ("per changed device", lambda r: r.per_device("changed", "changed")),
        ("per unchanged device", lambda r: r.per_device("unchanged", "unchanged")),
        ("per storage.git batch (first)", lambda r: r.per_batch("first")),
        ("per storage.git batch (changed)", lambda r: r.per_batch("changed")),
        ("whole unchanged backup", lambda r: float(len(r.phases["unchanged"].git))),
    ]
    for title, get in rows:
        values = [get(r) for r in results]
        line = title.ljust(36) + "".join(_fmt(v).rjust(22) for v in values)
        if len(results) == 2:
            line += "   " + _ratio(values[0], values[1])
        lines.append(line)
    for r in results:
        for phase in PHASES:
            p = r.phases[phase]
            cmds = ", ".join(f"{c} {n}" for c, n in p.commands.most_common())
            lines.append(f"  {r.label} {phase}: {len(p.git)} git ({cmds or 'none'}), "
                         f"{p.storage_jobs} storage.git job(s), statuses {dict(sorted(p.statuses.items()))}")
    return "\n".join(lines)


def _describe(rev: str, cwd: Path) -> str:
    out = subprocess.run(["git", "rev-parse", "--short", rev], cwd=cwd, capture_output=True, text=True)
    return out.stdout.strip() or rev


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--platform", default="ios")
    parser.add_argument("--batch-size", type=int, default=10, help="DEVICEVAULT_BATCH_SIZE (default %(default)s)")
    parser.add_argument("--base", default=DEFAULT_BASE, help="loopback base address of the lab (default %(default)s)")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="revision to compare with (default %(default)s)")
    parser.add_argument("--no-baseline", action="store_true", help="measure the current tree only")
    parser.add_argument("--keep", type=Path, help="directory for everything (kept); default: a temporary one")
    args = parser.parse_args(argv)

    from cli.services import RedisServer, free_port
    from lab.generate_inventory import generate_inventory
    from lab.testing import start_lab, stop_lab

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="devicevault-gitcount-"))
    workdir.mkdir(parents=True, exist_ok=True)
    counter = GitCounter(workdir)
    redis = RedisServer(workdir / "redis", free_port()).start()
    inventory, lab_state = workdir / "inventory", workdir / "lab"
    hosts = generate_inventory(count=args.devices, out=inventory, port=free_port(), base=args.base,
                               platforms=[args.platform])
    start_lab(inventory, lab_state)
    trees: list[tuple[str, Path]] = []
    baseline_dir = None
    if not args.no_baseline:
        baseline_dir = Path(tempfile.mkdtemp(prefix="devicevault-baseline-"))
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(baseline_dir), args.baseline], cwd=ROOT,
                       check=True)
        trees.append((f"base {_describe(args.baseline, ROOT)}", baseline_dir))
    head = _describe("HEAD", ROOT)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    trees.append((f"now {head}{'+' if dirty else ''}", ROOT))
    results = []
    try:
        print(f"{args.devices} {args.platform} devices, batches of {args.batch_size}, work in {workdir}", flush=True)
        for db, (label, root) in enumerate(trees, start=1):
            url = redis.url.rsplit("/", 1)[0] + f"/{db}"
            results.append(measure(label.split()[0], root, workdir, counter, url, inventory, lab_state, hosts,
                                   args.batch_size))
            results[-1].label = label
    finally:
        stop_lab(lab_state)
        redis.stop()
        if baseline_dir is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(baseline_dir)], cwd=ROOT)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(report(results, args.devices))
    return 0


if __name__ == "__main__":
    sys.exit(main())
