"""Benchmark: render time of the portal's Devices page and Device page on a large index.

    .venv/bin/python -m bench.portal                      # 10,000 devices, 1,000,000 versions (about 1-2 min)
    .venv/bin/python -m bench.portal --devices 2000 --versions 100000 --keep /tmp/dvbench

Generates, in a temporary directory (``--keep DIR`` keeps it and reuses it next time):

* a **baseline** index of ``--baseline-devices`` devices (100) with the same versions per device, and
* the **full** index of ``--devices`` devices (10,000) and ``--versions`` versions (1,000,000),

both migrated by Alembic (so with the real schema and indexes) and filled with bulk inserts (sqlite3
``executemany``): 2,000 runs every 6 hours, one ``changed`` device result and two copies (fs, git) per
version, and for the runs of the last 30 days an ``unchanged`` (or, in the newest run, ``failed``) result
for every other device (about 1.2 million results, as a real installation has); 3 % of the devices failed
last, 2 % are stale. One device, ``ams-ios-heavy``, has
``--heavy-versions`` versions (2,000) whose configurations (about 400 lines each) are really written
through the fs backend, so its Device page reads, diffs and counts lines for real; so are the versions of
one typical device (``site01-eos-00001``). The other versions' copies name files that do not exist; the
measured pages never read them.

Each page is rendered through Streamlit's ``AppTest`` (the real page script, logged in), first *cold*
(content cache emptied: the Device page reads 52 versions from storage) and then *warm* (a rerun); the
time of the same page on the baseline index is printed beside it with the ratio. The target is both
pages under 2 s on the full index; the exit status is 1 when a page misses it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sqlite3
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "portal" / "app.py"
HEAVY = "ams-ios-heavy"
RUNS = 2000
SITES = [f"site{i:02d}" for i in range(20)]
#: the index holds the platform file's short name (platforms/<name>.yml of the collection)
PLATFORMS = ["ios", "iosxr", "nxos", "ciscosmb", "eos", "junos", "routeros", "vyos", "sonic", "bigip", "asa", "fortios"]
TARGET_SECONDS = 2.0
RECENT_DAYS = 30  # runs of the last 30 days have a result for every device (changed, unchanged or failed)
BENCH_VERSION = "3"  # generated data layout; an index kept with --keep is made again when it changes
FMT = "%Y-%m-%d %H:%M:%S.%f"
CHUNK = 50_000


def _stamp(value: datetime) -> str:
    return value.strftime(FMT)


def real_configs(hostname: str, count: int) -> list[bytes]:
    """``count`` versions of a ~400-line configuration; each one changes a line and adds a route."""
    lines = [f"hostname {hostname}", "!"]
    for i in range(1, 49):
        lines += [f"interface GigabitEthernet1/0/{i}", f" description port {i}", " switchport mode access",
                  f" switchport access vlan {100 + i % 20}", "!"]
    lines += [f"ip route 10.{i}.0.0 255.255.0.0 192.0.2.1" for i in range(100)]
    lines += ["end"]
    texts = []
    for k in range(count):
        lines[3 + 5 * (k % 48)] = f" description port {k % 48 + 1} changed in version {k + 1}"
        lines.insert(-1, f"ip route 172.16.{k // 250}.{k % 250} 255.255.255.255 Null0 name V{k + 1}")
        if len(lines) > 450:  # keep the size steady: drop the oldest added route
            del lines[-50]
        texts.append(("\n".join(lines) + "\n").encode())
    return texts


def generate(home: Path, devices: int, versions: int, heavy_versions: int, seed: int = 7) -> dict:
    """Create and fill ``home/index.sqlite`` and ``home/fs``; returns what was made."""
    from storage.base import StoreOptions
    from storage.fs import FilesystemBackend
    from storage.index.db import upgrade
    from storage.paths import device_path

    home.mkdir(parents=True, exist_ok=True)
    db = home / "index.sqlite"
    url = f"sqlite:///{db}"
    upgrade(url)
    rng = random.Random(seed)
    now = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    run_times = [now - timedelta(hours=6 * (RUNS - r)) + timedelta(minutes=5) for r in range(RUNS)]
    run_ids = [f"run{r:05d}" for r in range(RUNS)]
    con = sqlite3.connect(db)
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA journal_mode=MEMORY")
    con.executemany(
        "INSERT INTO runs (id, created_at, finished_at, status, selector, requested_by, total, targets)"
        " VALUES (?, ?, ?, 'succeeded', 'all', 'scheduler', ?, 'fs,git')",
        [(rid, _stamp(t), _stamp(t + timedelta(minutes=4)), devices) for rid, t in zip(run_ids, run_times)],
    )
    # versions per device: the heavy one first, the rest spread evenly
    rest = max(0, versions - heavy_versions)
    counts = [heavy_versions] + [rest // (devices - 1) + (1 if i < rest % (devices - 1) else 0) for i in range(devices - 1)]
    names = [HEAVY] + [f"{SITES[i % len(SITES)]}-{PLATFORMS[i % len(PLATFORMS)].rsplit('.', 1)[-1]}-{i:05d}"
                       for i in range(1, devices)]
    real = {1: real_configs(names[0], counts[0])}  # the heavy device and a typical one are really stored
    if devices > 1:
        real[2] = real_configs(names[1], counts[1])
    fs = FilesystemBackend(home / "fs")
    device_rows, version_rows, copy_rows, result_rows = [], [], [], []
    vid = 0
    recent = {r for r in range(RUNS) if run_times[r] >= now - timedelta(days=RECENT_DAYS)}
    changed_in: dict[int, set[int]] = {r: set() for r in recent}
    failed_devices: set[int] = set()

    def flush(final: bool = False) -> None:
        if len(version_rows) >= CHUNK or final:
            con.executemany("INSERT INTO versions (id, device_id, run_id, sha256, size, created_at, author)"
                            " VALUES (?, ?, ?, ?, ?, ?, '')", version_rows)
            con.executemany("INSERT INTO copies (version_id, backend, ref, status, task_id, stored_at, error, attempts,"
                            " key_id) VALUES (?, ?, ?, 'stored', ?, ?, '', 1, '')", copy_rows)
            con.executemany("INSERT INTO device_results (task_id, run_id, device_id, status, timestamp, duration, error,"
                            " error_kind, log, sha256, size, targets) VALUES (?, ?, ?, 'changed', ?, ?, '', '', '', ?, ?,"
                            " 'fs,git')", result_rows)
            version_rows.clear(), copy_rows.clear(), result_rows.clear()

    for d, (name, count) in enumerate(zip(names, counts), start=1):
        site, platform = (SITES[0], PLATFORMS[0]) if d == 1 else (SITES[(d - 1) % len(SITES)], PLATFORMS[(d - 1) % len(PLATFORMS)])
        runs = sorted(rng.sample(range(RUNS), min(count, RUNS)))
        path = device_path(site, name)
        refs: list[str] = []
        if d in real:
            refs = fs.store_many([(text, path, StoreOptions(device=name, run_id=run_ids[r], timestamp=run_times[r].replace(tzinfo=timezone.utc)))
                                  for text, r in zip(real[d], runs)])
        for k, r in enumerate(runs):
            vid += 1
            when = _stamp(run_times[r] + timedelta(seconds=d % 200))
            if d in real:
                data = real[d][k]
                sha, size, fs_ref = hashlib.sha256(data).hexdigest(), len(data), refs[k]
            else:
                sha = hashlib.sha256(f"{name}/{k}".encode()).hexdigest()
                size = 9000 + (k * 37) % 4000
                fs_ref = f"{path}/{when[:10].replace('-', '')}T000000.000000Z_{sha[:12]}.cfg"
            version_rows.append((vid, d, run_ids[r], sha, size, when))
            task = f"{run_ids[r]}:{name}"
            copy_rows.append((vid, "fs", fs_ref, f"{task}:fs", when))
            copy_rows.append((vid, "git", f"main:{path}@{sha[:40]}", f"{task}:git", when))
            result_rows.append((task, run_ids[r], d, when, 2.0 + (k % 50) / 10, sha, size))
            if r in recent:
                changed_in[r].add(d)
        last_run = run_times[-1]
        last_change = run_times[runs[-1]] if runs else None
        roll = rng.random()
        if roll < 0.03:
            failed_devices.add(d)
            status, success, error = "failed", last_run - timedelta(days=rng.randint(0, 4)), f"{name}: timeout after 30 s waiting for the prompt"
        else:
            status, success, error = "unchanged", last_run, ""
        stale = success < last_run - timedelta(hours=24) or roll > 0.98
        if roll > 0.98:
            success = last_run - timedelta(days=3)
        device_rows.append((d, name, site, platform, _stamp(run_times[0]), status, _stamp(last_run), _stamp(success),
                            _stamp(last_change) if last_change else None, error, _stamp(success + timedelta(hours=24)) if stale else None))
        flush()
    flush(final=True)
    # every other device of a recent run has an unchanged (or, in the newest run, failed) result, as in life
    last = RUNS - 1
    for r in sorted(recent):
        rows = []
        for d in range(1, devices + 1):
            if d in changed_in[r]:
                continue
            failed = r == last and d in failed_devices
            rows.append((f"{run_ids[r]}:{names[d - 1]}", run_ids[r], d, "failed" if failed else "unchanged",
                         _stamp(run_times[r] + timedelta(seconds=d % 200)), 1.5,
                         f"{names[d - 1]}: timeout after 30 s waiting for the prompt" if failed else "",
                         "timeout" if failed else ""))
        con.executemany("INSERT INTO device_results (task_id, run_id, device_id, status, timestamp, duration, error,"
                        " error_kind, log, sha256, size, targets) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '', '', 0, '')", rows)
    con.execute("CREATE TABLE bench_meta (version TEXT)")
    con.execute("INSERT INTO bench_meta VALUES (?)", (BENCH_VERSION,))
    con.executemany("INSERT INTO devices (id, name, group_name, platform, first_seen, last_status, last_attempt_at,"
                    " last_success_at, last_change_at, last_error, stale_since) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    device_rows)
    con.commit()
    con.close()
    return {"url": url, "devices": devices, "versions": vid, "heavy": HEAVY}


def _counts(db: Path) -> tuple[int, int, str]:
    con = sqlite3.connect(db)
    try:
        return (con.execute("SELECT count(*) FROM devices").fetchone()[0],
                con.execute("SELECT count(*) FROM versions").fetchone()[0],
                con.execute("SELECT version FROM bench_meta").fetchone()[0])
    except sqlite3.Error:
        return 0, 0, ""
    finally:
        con.close()


def prepare(home: Path, devices: int, versions: int, heavy_versions: int) -> dict:
    db = home / "index.sqlite"
    if db.exists() and _counts(db) == (devices, versions, BENCH_VERSION):
        print(f"  reusing {db}", flush=True)
        return {"url": f"sqlite:///{db}", "devices": devices, "versions": versions, "heavy": HEAVY}
    if db.exists():
        import shutil

        shutil.rmtree(home)
    started = time.perf_counter()
    made = generate(home, devices, versions, heavy_versions)
    print(f"  generated {made['devices']} devices / {made['versions']} versions in "
          f"{time.perf_counter() - started:.1f} s ({db})", flush=True)
    return made


def measure(home: Path, made: dict, typical: str) -> dict[str, float]:
    """Seconds per page render (AppTest), cold then warm."""
    from streamlit.testing.v1 import AppTest

    from portal import content
    from portal.users import UsersFile

    os.environ.update({"DEVICEVAULT_HOME": str(home), "DEVICEVAULT_DATABASE_URL": made["url"],
                       "DEVICEVAULT_USERS_FILE": str(home / "users.yml"), "DEVICEVAULT_TARGETS": "fs,git"})
    users = UsersFile(home / "users.yml")
    if users.get("bench") is None:
        users.add("bench", "viewer", "bench-password", rounds=4)
    at = AppTest.from_file(str(APP), default_timeout=600)
    at.session_state["portal_user"] = "bench"
    times: dict[str, float] = {}

    def render(label: str, path: str | None = None) -> None:
        started = time.perf_counter()
        (at.switch_page(path) if path else at).run()
        times[label] = time.perf_counter() - started
        problems = [e.value for e in at.exception] + [e.value for e in at.error]
        if problems:
            raise SystemExit(f"{label}: the page failed: {problems}")
        title = at.title[0].value if at.title else ""
        if not label.startswith(title) or not at.dataframe:
            raise SystemExit(f"{label}: expected that page with its tables, got {title!r}")

    render("Dashboard (cold)")
    render("Dashboard (warm)")
    render("Devices (cold)", "views/devices.py")
    render("Devices (warm)")
    at.selectbox(key="devices_sort").set_value("versions")
    at.toggle(key="devices_desc").set_value(True)
    render("Devices sorted by versions")
    at.multiselect(key="devices_status").set_value(["failed"])
    render("Devices filtered: failed")
    render("Runs (cold)", "views/runs.py")
    render("Runs (warm)")
    for name, label in ((made["heavy"], f"Device, {made['heavy']} (cold)"), (typical, "Device, typical (cold)")):
        content.CACHE.clear()
        content._STATS.clear()
        at.query_params["device"] = name
        render(label, "views/device.py")
        render(label.replace("(cold)", "(warm)"))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--versions", type=int, default=1_000_000)
    parser.add_argument("--baseline-devices", type=int, default=100)
    parser.add_argument("--heavy-versions", type=int, default=2000)
    parser.add_argument("--keep", type=Path, help="Directory to keep (and reuse) the generated indexes in.")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import logging

    logging.disable(logging.WARNING)
    per_device = (args.versions - args.heavy_versions) / max(1, args.devices - 1)
    baseline_versions = args.heavy_versions + int(per_device * (args.baseline_devices - 1))
    work = args.keep or Path(tempfile.mkdtemp(prefix="devicevault-bench-"))
    print(f"portal benchmark in {work}", flush=True)
    print(f"baseline: {args.baseline_devices} devices, {baseline_versions} versions", flush=True)
    base = prepare(work / "baseline", args.baseline_devices, baseline_versions, args.heavy_versions)
    print(f"full: {args.devices} devices, {args.versions} versions", flush=True)
    full = prepare(work / "full", args.devices, args.versions, args.heavy_versions)
    typical = f"{SITES[1]}-{PLATFORMS[1].rsplit('.', 1)[-1]}-00001"
    base_times = measure(work / "baseline", base, typical)
    full_times = measure(work / "full", full, typical)
    print()
    print(f"{'page':<34}{'baseline':>10}{'full':>10}{'ratio':>8}  target < {TARGET_SECONDS:g} s")
    failed = False
    for label, seconds in full_times.items():
        ratio = seconds / base_times[label] if base_times.get(label) else float("nan")
        measured = label.startswith(("Devices (", "Device, "))
        verdict = ("ok" if seconds < TARGET_SECONDS else "TOO SLOW") if measured else ""
        failed |= measured and seconds >= TARGET_SECONDS
        print(f"{label:<34}{base_times[label]:>9.3f}s{seconds:>9.3f}s{ratio:>7.2f}x  {verdict}")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
