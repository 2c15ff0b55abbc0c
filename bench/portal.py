"""Benchmark: render time of the portal's pages, search and links on a large index.

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

Every device's newest configuration is in the search table (``search_texts``, with SQLite's FTS5 trigram
index): the lab's generator (``lab/configgen.py``) makes ``VARIANTS`` configurations of a few hundred lines
per platform, each device takes one with its own hostname, and 9 devices of 10 get ``NTP_LINE``.

Each page is rendered through Streamlit's ``AppTest`` (the real page script, logged in), first *cold*
(content cache emptied: the Device page reads 52 versions from storage) and then *warm* (a rerun); the
time of the same page on the baseline index is printed beside it with the ratio. Then: a deep link to a diff
(``?device=&a=&b=&mode=``) opened in a new session, the device picker (typing part of a name), six searches
of the newest configurations (text in nearly every device, in one group, a regex with and without a literal,
a regex in one group, a rare text; each with the number of lines found) and the comparison of a line across
devices. The Health page, the Compliance page (every device checked against two rules, one device in five
breaking one: about 2,000 rows) and the Export page are rendered too. The target is every one of them under 2 s on the full index; the exit status is 1 when one misses
it. An index kept with ``--keep`` is migrated to the newest schema before the measurements.
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
BENCH_VERSION = "4"  # generated data layout; an index kept with --keep is made again when it changes
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


#: the line the search and the line comparison look for: in 9 of 10 devices' configurations
NTP_LINE = "ntp server 10.0.0.123"
VARIANTS = 6  # generated configurations per platform (lab/configgen.py); each device takes one and renames it


def search_pool() -> dict[str, list[tuple[str, str]]]:
    """platform -> ``VARIANTS`` (generated hostname, masked configuration) of the lab's personalities
    (``lab/configgen.py``: a few hundred lines each, in the platform's own syntax)."""
    from jobs.ops.search_index import masked
    from lab.configgen import generate_config
    from lab.personality import load_personalities
    from lab.render import VOL_RE

    personalities = load_personalities()
    pool: dict[str, list[tuple[str, str]]] = {}
    for platform in PLATFORMS:
        p = personalities[platform]
        pool[platform] = []
        for v in range(VARIANTS):
            host = f"pool{v}-{platform}"
            text = generate_config(host, p.get("template"), site=SITES[v], spec=p.get("model") or {},
                                   facts=p.get("facts") or {}, template_text=p.get("config_template"))
            text = "\n".join(line for line in text.splitlines() if not VOL_RE.search(line)) + "\n"
            pool[platform].append((host, masked(platform, text)))
    return pool


def search_text(pool: dict[str, list[tuple[str, str]]], platform: str, name: str, d: int) -> str:
    """Device ``d``'s newest configuration: a pool configuration with its hostname, and ``NTP_LINE`` in
    9 devices of 10."""
    host, text = pool[platform][d % VARIANTS]
    text = text.replace(host, name)
    if d % 10:
        text += NTP_LINE + "\n"
    return text


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
    newest: dict[int, int] = {}  # device id -> its newest version id

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
            newest[d] = vid
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
    # the search index: each device's newest configuration (the consumer writes it with each version)
    started = time.perf_counter()
    pool = search_pool()
    texts = [(d, newest[d], real[d][-1].decode() if d in real else search_text(pool, row[3], row[1], d), _stamp(now))
             for d, row in enumerate(device_rows, start=1) if d in newest]
    for start in range(0, len(texts), 1000):
        con.executemany("INSERT INTO search_texts (device_id, version_id, body, updated_at) VALUES (?, ?, ?, ?)",
                        texts[start:start + 1000])
    print(f"  search index: {len(texts)} configurations, {sum(len(t[2]) for t in texts) / 1e6:.0f} MB, "
          f"{sum(t[2].count(chr(10)) for t in texts) // max(1, len(texts))} lines each on average, "
          f"{time.perf_counter() - started:.1f} s", flush=True)
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


#: compliance results: every device checked against two rules; one device in COMPLIANCE_EVERY breaks one
COMPLIANCE_RULES = ("ntp-server", "no-telnet")
COMPLIANCE_EVERY = 5


def fill_compliance(db: Path) -> None:
    """Each device's standing against :data:`COMPLIANCE_RULES` (what ``jobs.compliance`` writes), unless the
    index has some already: the Compliance page then lists about 2,000 devices of 10,000 with their lines."""
    import json

    con = sqlite3.connect(db)
    try:
        if con.execute("SELECT COUNT(*) FROM compliance_results").fetchone()[0]:
            return
        now = _stamp(datetime.now(timezone.utc))
        rows = []
        for device_id, version_id in con.execute("SELECT device_id, MAX(id) FROM versions GROUP BY device_id"):
            for n, rule in enumerate(COMPLIANCE_RULES):
                violated = n == 0 and device_id % COMPLIANCE_EVERY == 0
                lines = [{"line": NTP_LINE, "problem": "missing", "section": ""}] if violated else []
                rows.append((device_id, rule, version_id, violated, json.dumps(lines), now, now,
                             "violated" if violated else "resolved"))
        con.executemany("INSERT INTO compliance_results (device_id, rule, version_id, violated, lines, checked_at,"
                        " since, published) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        con.commit()
    finally:
        con.close()


def prepare(home: Path, devices: int, versions: int, heavy_versions: int) -> dict:
    db = home / "index.sqlite"
    if db.exists() and _counts(db) == (devices, versions, BENCH_VERSION):
        from storage.index.db import upgrade

        started = time.perf_counter()
        upgrade(f"sqlite:///{db}")  # newer migrations, before (not during) the measurements
        fill_compliance(db)
        print(f"  reusing {db} (migrated in {time.perf_counter() - started:.1f} s)", flush=True)
        return {"url": f"sqlite:///{db}", "devices": devices, "versions": versions, "heavy": HEAVY}
    if db.exists():
        import shutil

        shutil.rmtree(home)
    started = time.perf_counter()
    made = generate(home, devices, versions, heavy_versions)
    fill_compliance(db)
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

    def render(label: str, path: str | None = None, *, app: AppTest | None = None, button: str = "",
               tables: bool = True) -> None:
        app = app or at
        started = time.perf_counter()
        if button:
            (pressed,) = [b for b in app.button if b.label == button]
            pressed.click().run()
        else:
            (app.switch_page(path) if path else app).run()
        times[label] = time.perf_counter() - started
        problems = [e.value for e in app.exception] + [e.value for e in app.error]
        if problems:
            raise SystemExit(f"{label}: the page failed: {problems}")
        title = app.title[0].value if app.title else ""
        if not label.startswith(title) or (tables and not app.dataframe):
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
    render("Health (cold)", "views/health.py", tables=False)
    render("Compliance (cold)", "views/compliance.py")
    render("Compliance (warm)")
    render("Export (page)", "views/snapshot.py", tables=False)
    for name, label in ((made["heavy"], f"Device, {made['heavy']} (cold)"), (typical, "Device, typical (cold)")):
        content.CACHE.clear()
        content._STATS.clear()
        at.query_params["device"] = name
        render(label, "views/device.py")
        render(label.replace("(cold)", "(warm)"))
    # a deep link to a diff, opened in a new session (a new tab, a pasted link): the page and that diff
    content.CACHE.clear()
    content._STATS.clear()
    link = AppTest.from_file(str(APP), default_timeout=600)
    link.session_state["portal_user"] = "bench"
    link.query_params.update({"device": typical, "a": "3", "b": "4", "mode": "unified"})
    link.run()  # the new session's first run (the app's entry page), then the linked page: measured
    render("Device, deep link to a diff (cold)", "views/device.py", app=link)
    if not any(c.language == "diff" for c in link.code):
        raise SystemExit("the deep link did not show its diff")
    # the device picker: type part of a name (one LIMIT query over 10,000 names)
    at.query_params.clear()
    render("Device picker, page without a device", "views/device.py", tables=False)
    at.text_input(key="device_find").set_value(typical[-7:])
    render("Device picker, typing a name", tables=False)
    if typical not in at.selectbox(key="device_pick").options:
        raise SystemExit(f"the device picker did not offer {typical}")
    # search: the newest configuration of every device, from the index (no storage read)
    render("Search (page)", "views/search.py", tables=False)
    queries_ = [
        ("Search, text in every device", NTP_LINE, False, []),
        ("Search, text, one group", NTP_LINE, False, [SITES[3]]),
        ("Search, regex with a literal", r"^ntp server 10\.0\.0\.12[0-9]$", True, []),
        ("Search, regex without a literal", r"^\s+shutdown$", True, []),
        ("Search, regex, one group", r"^interface \S+[0-9]/1$", True, [SITES[5]]),
        ("Search, rare text", typical, False, []),
    ]
    for label, query, regex, groups in queries_:
        at.text_input(key="search_query").set_value(query)
        at.checkbox(key="search_regex").set_value(regex)
        at.multiselect(key="search_groups").set_value(groups)
        render(label, button="Search", tables=False)
        found = at.session_state["search_result"]
        if found["too_slow"] or found["frame"].empty:
            raise SystemExit(f"{label}: {'too slow' if found['too_slow'] else 'nothing found'}")
        times[f"  lines found: {label[8:]}"] = float(len(found["frame"]))
    at.text_input(key="compare_line").set_value(NTP_LINE)
    render("Search, compare a line (have / lack)", button="Compare")
    compared = at.session_state["compare_result"]
    times["  devices that have the line"] = float(len(compared.have))
    times["  devices that lack it"] = float(len(compared.lack))
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
    from cli.services import RedisServer, free_port

    redis = RedisServer(work / "redis", free_port()).start()  # the Health page reads queues and streams
    os.environ["DEVICEVAULT_REDIS_URL"] = redis.url
    try:
        base_times = measure(work / "baseline", base, typical)
        full_times = measure(work / "full", full, typical)
    finally:
        redis.stop()
    print()
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    print(f"{'page':<42}{'baseline':>10}{'full':>10}{'ratio':>8}  target < {TARGET_SECONDS:g} s")
    failed = False
    for label, seconds in full_times.items():
        if label.startswith("  "):  # a count, not a time
            print(f"{label:<42}{base_times.get(label, 0):>10.0f}{seconds:>10.0f}")
            continue
        ratio = seconds / base_times[label] if base_times.get(label) else float("nan")
        verdict = "ok" if seconds < TARGET_SECONDS else "TOO SLOW"  # every page, search and link (issue 15)
        failed |= seconds >= TARGET_SECONDS
        print(f"{label:<42}{base_times[label]:>9.3f}s{seconds:>9.3f}s{ratio:>7.2f}x  {verdict}")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
