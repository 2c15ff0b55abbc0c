"""Benchmark: the git store as it grows to 100,000 commits, with and without the maintenance pass.

    .venv/bin/python -m bench.gitgrowth                                   # 100,000 commits, 1,000 devices
    .venv/bin/python -m bench.gitgrowth --commits 2000 --devices 100      # quick check (~1 min)
    .venv/bin/python -m bench.gitgrowth --commits 30000 --maintain-every 10 --keep /tmp/gg

What it drives: the real git backend (``storage.registry.get_backend("git", repo_path=...)``, i.e.
storage/git.py) through the storage job's own call, ``jobs.deliver.store._store_all`` (``store_many`` of one
batch, with its one-at-a-time fallback), with :class:`jobs.deliver.outbox.StorageItem` objects built as the
decider builds them: path ``<group>/<host>``, message ``<host>: configuration changed (run <run id>)``,
author date = collection time. No Redis, no index, no Ansible: only storage.

Workload: ``--devices`` devices spread over every lab personality (named and grouped by ``lab.generate_inventory``), each configuration rendered once by the lab's generator (``lab.configgen.generate_config``: 8-23 KB,
14 KB on average; volatile lines dropped, as normalising does). Every version of a device is its base
configuration with the personality's change line (``LabControl.change``: ``ip route 10.250.a.b ...
LAB-CHANGE-<seq>``) inserted for its last ``--window-lines`` changes: one line added and, once the window is
full, one removed per version. One *run* (run id ``bench-000001``...) changes every device once, in a random
order, in batches of ``--batch-size`` (50, DEVICEVAULT_BATCH_SIZE's default): one ``store_many`` per batch,
one commit per device, until ``--commits`` commits.

Two repositories, one after the other, same workload (same seed):

- **maintained**: after every ``--maintain-every`` batches the backend's ``maintain()`` runs, as the hourly
  maintenance pass (jobs/ops/maintenance.py) calls it (``git repack -d -l --geometric=2`` and a commit-graph
  layer under the store lock, or the full repack when due); its cost is reported apart, never in the store
  time. The full repack (``git repack -a -d -f``, storage/git.py) is due once per 24 h of wall-clock time, so
  in a bench only the first pass makes one; ``--full-repack-every N`` makes it due every N batches instead
  (one hourly pass after a run of all devices = ``devices / batch-size`` batches, so a daily full repack of
  1,000 devices is every 480 batches) and the other passes never do one;
- **baseline**: ``maintain()`` never runs (what a store did before maintenance existed; ``store_many``'s own
  roll-up at more than ``PACK_LIMIT`` packs still happens, it is part of the store path), up to
  ``--baseline-commits`` (default 10,000; 0 = no baseline).

At each checkpoint (``--checkpoints``, default 1k, 10k, 50k, 100k, cut to ``--commits``, plus ``--commits``
itself) it reports: ``du`` of ``.git`` (disk blocks), packs / loose objects / pack size (``git count-objects
-v``), store time per commit over the last ``--window`` commits before the checkpoint (wall, and CPU =
user+sys of this process plus its reaped git children: ``getrusage(RUSAGE_SELF)`` + ``RUSAGE_CHILDREN``
deltas around each ``store_many`` call only; generating the texts is not counted), how many full repacks
``maintain()`` made and how long its last full and its longest geometric pass held the store lock (the
``seconds`` it reports), and the wall time of
``git log --format=%H -- <group>/<host>`` for one device (the best of 3). Every figure of the maintained
repository is also printed as a ratio against the baseline at the same checkpoint (``x base``; below 1 is
smaller / faster), and the per-commit store time of the last checkpoint against the first one (flat = 1.0).
At the end (unless ``--no-reference``) the maintained repository gets a full ``git repack -a -d -f`` (fresh
delta search) and then a commit-graph, with ``du`` and the ``git log`` time after each: what the geometric
repack leaves on the table. ``--minutes M`` (or SIGTERM / Ctrl-C) stops early: the series running then gets a last
checkpoint where it stopped, and the report is printed as usual (on a busy shared machine, say how far it got).

Figures are in bench/README.md ("Git store growth").
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


DEFAULT_CHECKPOINTS = (1_000, 10_000, 50_000, 100_000)
START = 1_767_225_600  # 2026-01-01T00:00:00Z: collection time of the first run; one hour per run after it


@dataclass
class Device:
    host: str
    group: str
    head: list[str]   # the base configuration up to and including the line the changes go after
    tail: list[str]   # the rest
    personality: object
    seq: int = 0
    changes: list[str] = field(default_factory=list)

    def next_version(self, window: int) -> str:
        self.seq += 1
        seq = self.seq
        line = self.personality.render(self.personality.get("change")["line"],
                                       {"seq": seq, "a": (seq // 250) % 250, "b": seq % 250 + 1, "host": self.host})
        self.changes = (self.changes + [line])[-window:]
        return "\n".join(self.head + self.changes + self.tail)


def make_devices(count: int, seed: int) -> list[Device]:
    """``count`` devices named and grouped by ``lab.generate_inventory`` (``<site>-<platform>-NN`` in group
    ``site_<site>``), over every lab platform."""
    from lab.configgen import VOL_MARK, generate_config
    from lab.generate_inventory import generate_inventory
    from lab.personality import load_personalities

    personalities = load_personalities()
    with tempfile.TemporaryDirectory(prefix="devicevault-gitgrowth-inv-") as inventory:
        hosts = generate_inventory(count, inventory, platforms="all")
    marker = VOL_MARK.split("{}")[0]
    devices = []
    for host in hosts:
        site, plat, _n = host.split("-")
        p = personalities[plat]
        text = generate_config(host, p.get("template"), site, p.get("model") or {}, p.get("facts") or {},
                               p.get("config_template"))
        lines = [ln for ln in text.split("\n") if marker not in ln]
        at = max((k for k, ln in enumerate(lines) if p.change_after.search(ln)), default=len(lines) - 2)
        devices.append(Device(host, f"site_{site}", lines[: at + 1], lines[at + 1:], p))
    random.Random(seed).shuffle(devices)  # batches mix platforms and sites
    return devices


@dataclass
class Checkpoint:
    commits: int
    du_bytes: int
    packs: int
    loose: int
    pack_bytes: int
    wall_per_commit: float  # seconds, store_many only, over the window
    cpu_per_commit: float
    window: int
    log_seconds: float
    log_commits: int
    maintain_runs: int
    maintain_wall: float  # total so far
    maintain_cpu: float
    full_runs: int  # full repacks so far
    full_seconds: float  # store lock held by the last full repack
    geometric_seconds: float  # store lock held by the longest geometric pass so far
    elapsed: float


@dataclass
class Series:
    label: str
    checkpoints: dict[int, Checkpoint] = field(default_factory=dict)
    stopped: bool = False  # by --minutes or a signal, before its --commits


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _du(path: Path) -> int:
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0]) * 1024


def _count_objects(repo: Path) -> dict[str, int]:
    out = subprocess.run(["git", "count-objects", "-v"], cwd=repo, capture_output=True, text=True, check=True).stdout
    return {k.strip(): int(v) for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)}


def _log_time(repo: Path, path: str) -> tuple[float, int]:
    best, commits = float("inf"), 0
    for _ in range(3):
        started = time.perf_counter()
        out = subprocess.run(["git", "log", "--format=%H", "--", path], cwd=repo, capture_output=True, check=True).stdout
        best = min(best, time.perf_counter() - started)
        commits = len(out.split())
    return best, commits


class Stop:
    """When to stop early: ``--minutes`` after the start, or at SIGTERM / SIGINT (the run so far is reported)."""

    def __init__(self, minutes: float | None):
        self.deadline = time.monotonic() + minutes * 60 if minutes else None
        self.signalled = False
        signal.signal(signal.SIGTERM, self._signal)
        signal.signal(signal.SIGINT, self._signal)

    def _signal(self, _signum, _frame) -> None:
        self.signalled = True

    def __bool__(self) -> bool:
        return self.signalled or (self.deadline is not None and time.monotonic() > self.deadline)


def run_series(label: str, repo: Path, devices: list[Device], commits: int, checkpoints: list[int], *,
               batch_size: int, maintain_every: int, window: int, window_lines: int, seed: int,
               stop: Stop, full_every: int = 0) -> Series:
    from jobs.deliver.outbox import StorageItem
    from jobs.deliver.store import _store_all
    from storage.paths import device_path
    from storage.registry import get_backend

    for d in devices:  # each series starts from the same device states
        d.seq, d.changes = 0, []
    rng = random.Random(seed)
    backend = get_backend("git", repo_path=str(repo))
    watched = device_path(devices[0].group, devices[0].host)
    series = Series(label)
    timings: list[tuple[int, float, float]] = []  # (commits in batch, wall, cpu) per batch
    maintain = {"runs": 0, "wall": 0.0, "cpu": 0.0, "full": 0, "full_seconds": 0.0, "geometric_seconds": 0.0}
    done = batches = run = 0
    started = time.monotonic()
    pending = sorted(set(checkpoints))
    while done < commits and not stop:
        run += 1
        run_id = f"bench-{run:06d}"
        order = list(devices)
        rng.shuffle(order)
        for at in range(0, len(order), batch_size):
            if done >= commits or stop:
                break
            chunk = order[at: at + batch_size][: commits - done]
            items = [StorageItem(task_id=f"{run_id}:{d.host}", run_id=run_id, device=d.host, group=d.group,
                                 sha256="", config=d.next_version(window_lines),
                                 collected_at=START + run * 3600 + at + k, targets=("git",))
                     for k, d in enumerate(chunk)]
            wall0, cpu0 = time.perf_counter(), _cpu()
            stored, failures = _store_all(backend, "git", items)
            wall, cpu = time.perf_counter() - wall0, _cpu() - cpu0
            if failures or len(stored) != len(items):
                raise SystemExit(f"{label}: batch {batches + 1} failed: {failures}")
            timings.append((len(items), wall, cpu))
            done += len(items)
            batches += 1
            full_due = bool(full_every and batches % full_every == 0)
            if maintain_every and (batches % maintain_every == 0 or full_due):
                wall0, cpu0 = time.perf_counter(), _cpu()
                result = backend.maintain(full=full_due if full_every else None)
                if result.get("skipped") == "busy":
                    raise SystemExit(f"{label}: maintain() found the store lock busy")
                maintain["runs"] += bool(result.get("ran"))
                maintain["wall"] += time.perf_counter() - wall0
                maintain["cpu"] += _cpu() - cpu0
                if result.get("full_repack"):
                    maintain["full"] += 1
                    maintain["full_seconds"] = result["seconds"]
                elif result.get("ran"):
                    maintain["geometric_seconds"] = max(maintain["geometric_seconds"], result["seconds"])
            while pending and done >= pending[0]:
                cp = pending.pop(0)
                series.checkpoints[cp] = _checkpoint(repo, watched, timings, cp, window, maintain, started)
                _print_checkpoint(label, series.checkpoints[cp])
    if done < commits and done:  # stopped early: a last checkpoint where it stopped
        series.stopped = True
        series.checkpoints[done] = _checkpoint(repo, watched, timings, done, window, maintain, started)
        _print_checkpoint(label, series.checkpoints[done])
    backend.close()
    return series


def _checkpoint(repo: Path, watched: str, timings: list[tuple[int, float, float]], commits: int, window: int,
                maintain: dict, started: float) -> Checkpoint:
    n = wall = cpu = 0.0
    for count, w, c in reversed(timings):
        if n >= window:
            break
        n, wall, cpu = n + count, wall + w, cpu + c
    objects = _count_objects(repo)
    log_seconds, log_commits = _log_time(repo, watched)
    return Checkpoint(commits, _du(repo / ".git"), objects["packs"], objects["count"], objects["size-pack"] * 1024,
                      wall / n, cpu / n, int(n), log_seconds, log_commits, maintain["runs"], maintain["wall"],
                      maintain["cpu"], maintain["full"], maintain["full_seconds"], maintain["geometric_seconds"],
                      time.monotonic() - started)


def reference(repo: Path, watched: str) -> dict[str, float]:
    """What the maintained repository becomes after a full repack that searches deltas afresh (``git repack
    -a -d -f``), and ``git log -- <path>`` once a commit-graph is written too: the yardsticks for
    ``maintain()``'s geometric repack, which keeps the deltas fast-import made."""
    out: dict[str, float] = {}
    wall0, cpu0 = time.perf_counter(), _cpu()
    subprocess.run(["git", "repack", "-a", "-d", "-f", "-q"], cwd=repo, check=True)
    out["repack_wall"], out["repack_cpu"] = time.perf_counter() - wall0, _cpu() - cpu0
    out["du_bytes"] = _du(repo / ".git")
    out["pack_bytes"] = _count_objects(repo)["size-pack"] * 1024
    out["log_seconds"] = _log_time(repo, watched)[0]
    subprocess.run(["git", "commit-graph", "write", "--reachable"], cwd=repo, check=True, capture_output=True)
    out["log_graph_seconds"] = _log_time(repo, watched)[0]
    return out


def _mib(b: int) -> str:
    return f"{b / 2**20:.1f}"


def _print_checkpoint(label: str, c: Checkpoint) -> None:
    print(f"  {label:<10} {c.commits:>7} commits: .git {_mib(c.du_bytes)} MiB, {c.packs} packs, {c.loose} loose, "
          f"store {c.wall_per_commit * 1000:.2f} ms wall / {c.cpu_per_commit * 1000:.2f} ms CPU per commit "
          f"(last {c.window}), git log -- path {c.log_seconds:.2f} s ({c.log_commits} commits), "
          f"maintain {c.maintain_runs} runs {c.maintain_wall:.1f} s ({c.full_runs} full, last held the lock "
          f"{c.full_seconds:.1f} s; geometric at most {c.geometric_seconds:.1f} s), {c.elapsed:.0f} s so far", flush=True)


ROWS = (  # title, value, format
    (".git on disk (MiB)", lambda c: c.du_bytes / 2**20, "{:.1f}"),
    ("pack size (MiB)", lambda c: c.pack_bytes / 2**20, "{:.1f}"),
    ("packs", lambda c: c.packs, "{:d}"),
    ("loose objects", lambda c: c.loose, "{:d}"),
    ("store wall ms/commit", lambda c: c.wall_per_commit * 1000, "{:.2f}"),
    ("store CPU ms/commit", lambda c: c.cpu_per_commit * 1000, "{:.2f}"),
    ("git log -- <path> s", lambda c: c.log_seconds, "{:.3f}"),
    ("maintain runs (total)", lambda c: c.maintain_runs, "{:d}"),
    ("maintain wall s (total)", lambda c: c.maintain_wall, "{:.1f}"),
    ("maintain CPU s (total)", lambda c: c.maintain_cpu, "{:.1f}"),
    ("full repacks (total)", lambda c: c.full_runs, "{:d}"),
    ("last full repack: lock held s", lambda c: c.full_seconds, "{:.1f}"),
    ("longest geometric pass: lock held s", lambda c: c.geometric_seconds, "{:.2f}"),
)


def _times(a: float, b: float | None) -> str:
    if b is None:
        return ""
    if b == 0:
        return "(= base)" if a == 0 else "(base 0)"
    return f"({a / b:.2f}x base)"


def report(main: Series, base: Series | None, ref: dict[str, float] | None = None) -> str:
    lines = []
    for cp, c in sorted(main.checkpoints.items()):
        b = base.checkpoints.get(cp) if base else None
        lines.append(f"{cp:,} commits ({c.window} in the store-time window)".ljust(44) + "maintained".rjust(12)
                     + ("baseline (no maintain)".rjust(26) if b else ""))
        for title, get, fmt in ROWS:
            value = get(c)
            line = f"  {title:<42}" + fmt.format(value).rjust(12)
            if b:
                line += fmt.format(get(b)).rjust(12) + "  " + _times(value, get(b))
            lines.append(line)
    for series in filter(None, (main, base)):
        cps = sorted(series.checkpoints.values(), key=lambda c: c.commits)
        if series.stopped or not cps:
            lines.append(f"{series.label}: stopped early (--minutes or a signal) at "
                         f"{cps[-1].commits if cps else 0:,} commits")
        if len(cps) >= 2:
            first, last = cps[0], cps[-1]
            lines.append(f"{series.label}: store time per commit at {last.commits:,} / at {first.commits:,}: wall "
                         f"{last.wall_per_commit / first.wall_per_commit:.2f}x, CPU "
                         f"{last.cpu_per_commit / first.cpu_per_commit:.2f}x (flat = 1.00)")
    if ref and main.checkpoints:
        last = max(main.checkpoints.values(), key=lambda c: c.commits)
        lines.append(f"maintained at {last.commits:,}, then a full repack (git repack -a -d -f, "
                     f"{ref['repack_wall']:.0f} s wall / {ref['repack_cpu']:.0f} s CPU): .git "
                     f"{_mib(ref['du_bytes'])} MiB ({ref['du_bytes'] / last.du_bytes:.2f}x maintained), pack "
                     f"{_mib(ref['pack_bytes'])} MiB; git log -- <path> {ref['log_seconds']:.3f} s, with a "
                     f"commit-graph {ref['log_graph_seconds']:.3f} s ({ref['log_graph_seconds'] / last.log_seconds:.2f}x "
                     f"maintained)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=100_000)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=50, help="devices per store_many (default %(default)s)")
    parser.add_argument("--maintain-every", type=int, default=20,
                        help="batches between two maintain() calls (default %(default)s)")
    parser.add_argument("--full-repack-every", type=int, default=0, metavar="N",
                        help="maintain(full=True) every N batches, maintain(full=False) otherwise (default: 0, the "
                             "backend decides: once per 24 h of wall-clock time, i.e. the first pass)")
    parser.add_argument("--baseline-commits", type=int, default=10_000,
                        help="commits of the baseline without maintain() (default %(default)s; 0: none)")
    parser.add_argument("--checkpoints", default=",".join(map(str, DEFAULT_CHECKPOINTS)),
                        help="commit counts to report at (default %(default)s; --commits is always one)")
    parser.add_argument("--window", type=int, default=1000, help="commits the store time is averaged over")
    parser.add_argument("--window-lines", type=int, default=8, help="change lines a configuration keeps")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--minutes", type=float,
                        help="stop both series after this many minutes and report where they got (default: no limit)")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the full repack + commit-graph of the maintained repository at the end")
    parser.add_argument("--keep", type=Path, help="directory for the repositories (kept); default: a temporary one")
    args = parser.parse_args(argv)
    if args.commits < 1 or args.devices < 1 or args.batch_size < 1:
        parser.error("--commits, --devices and --batch-size must be at least 1")

    wanted = sorted({int(x) for x in args.checkpoints.split(",") if x.strip()} | {args.commits})
    checkpoints = [c for c in wanted if 0 < c <= args.commits]
    base_commits = min(args.baseline_commits, args.commits)
    base_checkpoints = [c for c in checkpoints if c <= base_commits]
    if base_commits and base_commits not in base_checkpoints:
        base_checkpoints.append(base_commits)
        checkpoints = sorted(set(checkpoints) | {base_commits})
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="devicevault-gitgrowth-"))
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("maintained", "baseline"):
        if (workdir / name).exists():
            raise SystemExit(f"{workdir / name} exists; give --keep a new directory")
    try:
        t0 = time.monotonic()
        devices = make_devices(args.devices, args.seed)
        sizes = [len("\n".join(d.head + d.tail)) for d in devices]
        print(f"{args.devices} devices ({sum(sizes) / len(sizes) / 1024:.1f} KB average, {min(sizes) / 1024:.1f}"
              f"-{max(sizes) / 1024:.1f} KB) rendered in {time.monotonic() - t0:.0f} s; batches of {args.batch_size}, "
              f"maintain() every {args.maintain_every} batches, full repack "
              f"{f'every {args.full_repack_every} batches' if args.full_repack_every else 'when the backend says'}; "
              f"{args.commits:,} commits "
              f"(baseline {base_commits:,}); work in {workdir}", flush=True)
        common = dict(batch_size=args.batch_size, window=args.window, window_lines=args.window_lines, seed=args.seed,
                      stop=Stop(args.minutes))
        base = None
        if base_commits:
            base = run_series("baseline", workdir / "baseline", devices, base_commits, base_checkpoints,
                              maintain_every=0, **common)
        main_series = run_series("maintained", workdir / "maintained", devices, args.commits, checkpoints,
                                 maintain_every=args.maintain_every, full_every=args.full_repack_every, **common)
        ref = None
        if not args.no_reference and main_series.checkpoints:
            from storage.paths import device_path

            ref = reference(workdir / "maintained", device_path(devices[0].group, devices[0].host))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(report(main_series, base, ref))
    return 0


if __name__ == "__main__":
    sys.exit(main())
