"""Benchmark: CPU cost of fetching device configurations, DeviceVault against plain Ansible.

    .venv/bin/python -m bench.fetch                        # 50 simulated IOS devices (about 4-5 min)
    .venv/bin/python -m bench.fetch --devices 10 --platform eos

Starts a lab of ``--devices`` simulated devices of one platform (loopback 127.0.160.1 and up; keep
``--base`` inside 127.0.160.0-127.0.169.255, other labs run on this machine at the same time) and measures,
in the same run and against the same devices:

1. **baseline**: plain ``ansible-playbook -f 50`` with one task, the platform's ``<os>_command`` module
   (``cisco.ios.ios_command: commands: [show running-config]``): only the configuration, as in
   ../shared/FINDINGS.md;
2. **baseline 2**: plain ``ansible-playbook -f 50`` with ``ansible.netcommon.cli_command`` looped over the
   platform's commands (what DeviceVault ran before ``devicevault.network.collect``: per device and
   command a worker fork and a fresh ``ansible-connection`` client process that imports Ansible just to
   find the persistent connection's socket);
3. **DeviceVault**: ``jobs.collect.fetch.fetch_configs`` over all hosts in one call (ansible-runner,
   ``playbooks/backup.yml``, every command of the collection's ``platforms/<platform>.yml``).

How it measures: each variant runs under a small wrapper process (``--measure``) that makes itself a
*child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``), starts the command, waits for it and then reaps every
orphaned descendant. That matters: ``ansible-connection`` (the persistent network_cli connection, one per
device) double-forks into the background, so a plain ``getrusage(RUSAGE_CHILDREN)`` delta around
``ansible-playbook`` misses its CPU entirely. CPU = user+sys of ``getrusage(RUSAGE_CHILDREN)`` in the
wrapper after reaping everything (the wrapper's own CPU is not in it); "detached" (CPU-s per device) is
the part that only the subreaper sees. Memory = peak of the summed PSS (``/proc/PID/smaps_rollup``) of all the
wrapper's descendants, sampled every 0.5 s; procs = most descendants alive at once. Wall = start to end
of the command itself (not the reaping of lingering connections). Lab CPU = the simulated devices' server
(``/proc/<lab pid>/stat``), shown for context, never counted. A short unmeasured warm-up (one device per
variant) runs first so no variant pays for cold caches. Every device must answer every variant with the
expected number of outputs and a complete configuration (the platform's ``complete`` patterns);
otherwise the benchmark stops with exit status 1.

Measured on 2026-11-30 on this 2-core machine (Debian 12, Python 3.11, ansible-core 2.19, IOS lab), with
other people's test runs keeping the load average at 2-50 (so wall times are inflated; CPU-s repeat within
about 5-10 % between runs). ``fetch_configs`` is one ``run_once`` task per batch
(``devicevault.network.collect_batch``: threads in a few forked processes, no ``ansible-connection`` per
device)::

    50 devices (load 1.8 -> 33)    CPU-s/dev  wall s  cmds/dev  vs baseline  vs RANCID*  detached  peak MB  procs
    baseline (ios_command)         1.26       38.4      1        1.00x       10.5x      0.34      2864     207
    baseline 2 (cli_command x3)    2.81       77.0      3        2.22x       23.4x      0.42      3964     251
    DeviceVault (fetch_configs)    0.12       10.2      3        0.09x        1.0x      0.00       147      10

    500 devices                    see bench/README.md

    * RANCID ~0.12 CPU-s/device is the figure from ../shared/FINDINGS.md, not measured here.

What the numbers say: DeviceVault now fetches three commands per device for a tenth of the CPU plain Ansible
spends on one, with a twentieth of the memory, and starts a constant number of processes per batch (the
playbook, its worker, and one fetch process per 8 concurrent devices). Before (2026-11-22/23) it cost what
plain Ansible costs (1.85 CPU-s per device, 2840 MB for 50 devices): most of that was the per-device
``ansible-connection`` process (an interpreter that imports Ansible), which is gone. The remaining cost per
batch is ``ansible-playbook`` starting (about 1 CPU-s), so the CPU per device falls as batches grow.
The baselines' ``ansible-connection`` processes are detached (they double-fork): the wrapper reaps them as a
child subreaper and counts their CPU; those still alive 3 s after ``ansible-playbook`` ended are terminated.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BASE = "127.0.160.0"
RANCID_CPU_PER_DEVICE = 0.12  # ../shared/FINDINGS.md (not measured here)
FORKS = 50
PR_SET_CHILD_SUBREAPER = 36
SAMPLE_SECONDS = 0.5
LINGER_GRACE = 3  # seconds detached processes (ansible-connection) get to end on their own after a run


# --------------------------------------------------------------------------- the measuring wrapper
def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def _descendants(pid: int) -> list[int]:
    kids, found, todo = _children_map(), [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def measure_command(cmd: list[str], stdout_path: str) -> dict:
    """Run ``cmd`` as a child subreaper; CPU of everything it started, wall, peak PSS, peak processes."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    peak = {"pss_kb": 0, "procs": 0}
    stop = threading.Event()

    def sample() -> None:
        me = os.getpid()
        while not stop.wait(SAMPLE_SECONDS):
            pids = _descendants(me)
            peak["procs"] = max(peak["procs"], len(pids))
            peak["pss_kb"] = max(peak["pss_kb"], sum(_pss_kb(p) for p in pids))

    before = os.times()
    sampler = threading.Thread(target=sample, daemon=True)
    with open(stdout_path, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        sampler.start()
        _, status, main_usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    # reap what detached itself: ansible-connection daemons normally close when the playbook ends; those
    # still idle after LINGER_GRACE seconds are counted, then terminated (by pid) and reaped with their CPU
    deadline, lingering, sig = time.perf_counter() + LINGER_GRACE, None, signal.SIGTERM
    while True:
        try:
            pid, _, _ = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid:
            continue
        if time.perf_counter() >= deadline:
            left = _descendants(os.getpid())
            lingering = left if lingering is None else lingering
            for child in left:
                _signal(child, sig)
            deadline, sig = time.perf_counter() + 10, signal.SIGKILL
        time.sleep(0.05)
    stop.set()
    sampler.join()
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return {
        "rc": proc.returncode,
        "wall": wall,
        "cpu": cpu,
        "cpu_main_tree": main_usage.ru_utime + main_usage.ru_stime,
        "lingering": len(lingering or []),
        "peak_pss_mb": peak["pss_kb"] / 1024,
        "peak_procs": peak["procs"],
    }


# --------------------------------------------------------------------------- DeviceVault, inside the wrapper
def inner_fetch(inventory: str, hosts: list[str]) -> int:
    """``fetch_configs`` over ``hosts`` in one call; prints {host: {"outputs": [...]} | {"error": "..."}}."""
    sys.path.insert(0, str(ROOT))
    from jobs.collect.fetch import fetch_configs
    from jobs.settings import Settings

    outcomes = fetch_configs(hosts, inventory=inventory, settings=Settings.load())
    json.dump({h: ({"outputs": o.outputs} if o.error is None else {"error": str(o.error)})
               for h, o in outcomes.items()}, sys.stdout)
    return 0


# --------------------------------------------------------------------------- the variants
def _module_exists(fqcn: str) -> bool:
    import importlib.util

    namespace, collection, name = fqcn.split(".")
    try:
        return importlib.util.find_spec(f"ansible_collections.{namespace}.{collection}.plugins.modules.{name}") is not None
    except ModuleNotFoundError:
        return False


def playbooks(platform) -> dict[str, tuple[str, list[str], str]]:
    """{variant: (playbook YAML, commands per device, module)} for the two plain-Ansible variants."""
    config_command = [c.command for c in platform.commands if not c.comment][-1]
    module = f"{platform.network_os}_command"
    if not _module_exists(module):
        module = "ansible.netcommon.cli_command"
    if module != "ansible.netcommon.cli_command":
        task1 = {"name": "Collect configuration", module: {"commands": [config_command]}}
    else:  # a platform of our own plugin has no vendor module: the generic one
        task1 = {"name": "Collect configuration", "ansible.netcommon.cli_command": {"command": config_command}}
    commands = list(platform.command_lines)
    task2 = {"name": "Collect configuration", "ansible.netcommon.cli_command": {"command": "{{ item }}"},
             "loop": commands}

    def play(task: dict) -> str:
        return json.dumps([{"name": "bench", "hosts": "all", "gather_facts": False, "tasks": [task]}], indent=1)

    return {"baseline": (play(task1), [config_command], module.rsplit(".", 1)[-1]),
            "baseline2": (play(task2), commands, "cli_command")}


def _outputs_from_json(text: str, hosts: list[str]) -> dict[str, dict]:
    """{host: {"outputs": [...]} | {"error": ...}} from the json stdout callback of ansible-playbook."""
    try:
        data = json.loads(text[text.index("{"):])
        results = data["plays"][0]["tasks"][0]["hosts"]
    except (ValueError, KeyError, IndexError):
        return {h: {"error": "no json output: " + text[-500:]} for h in hosts}
    found = {}
    for host in hosts:
        res = results.get(host)
        if res is None:
            found[host] = {"error": "no result"}
        elif res.get("failed") or res.get("unreachable"):
            found[host] = {"error": str(res.get("msg") or res)[:300]}
        elif "results" in res:  # a loop
            found[host] = {"outputs": [str(r.get("stdout", "")) for r in res["results"]]}
        else:
            stdout = res.get("stdout")
            found[host] = {"outputs": stdout if isinstance(stdout, list) else [str(stdout or "")]}
    return found


def check(label: str, answers: dict[str, dict], hosts: list[str], commands: list[str], platform) -> list[str]:
    """Problems: a device without an answer, a missing output, an incomplete configuration."""
    config_command = [c.command for c in platform.commands if not c.comment][-1]
    problems = []
    for host in hosts:
        answer = answers.get(host) or {"error": "no answer"}
        if "error" in answer:
            problems.append(f"{label}: {host}: {answer['error']}")
            continue
        outputs = answer["outputs"]
        if len(outputs) != len(commands) or not all(o.strip() for o in outputs):
            problems.append(f"{label}: {host}: {len(outputs)} outputs ({[len(o) for o in outputs]} chars), "
                            f"expected {len(commands)} non-empty")
            continue
        config = outputs[commands.index(config_command)]
        if platform.complete and not any(p.search(config) for p in platform.complete):
            problems.append(f"{label}: {host}: the configuration looks incomplete ({len(config)} chars)")
    return problems


def cpu_seconds(pid: int, reaped_children: bool = False) -> float:
    """utime+stime of a live process from ``/proc/PID/stat`` (NaN when it is gone); with ``reaped_children``
    also cutime+cstime: the CPU of the children it has waited for (and of theirs)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return float("nan")
    fields = stat[stat.rindex(b")") + 2:].split()
    ticks = sum(int(f) for f in fields[11:15 if reaped_children else 13])
    return ticks / os.sysconf("SC_CLK_TCK")


def lab_cpu(pid: int) -> float:
    return cpu_seconds(pid)


def target_lines(devices: int, baseline_cpu: float, cpu: float, peak_mb: float) -> list[str]:
    """Issue 12's targets for ``fetch_configs`` at this many devices, each marked met or NOT met."""
    checks = [(f"<= {limit} CPU-s per device at {at}+ devices ({cpu:.3f})", cpu <= limit)
              for at, limit in ((50, 0.15), (500, 0.10)) if devices >= at]
    if devices >= 50:
        checks.append((f">= 12x less CPU per device than the plain ios_command baseline ({baseline_cpu / cpu:.1f}x)",
                       baseline_cpu / cpu >= 12))
    if devices >= 500:
        checks.append((f"peak memory under 1 GB at {devices} devices ({peak_mb:.0f} MB)", peak_mb < 1024))
    if not checks:
        checks = [(f"CPU per device against the baseline: {baseline_cpu / cpu:.1f}x less (targets are set at 50"
                   " and 500 devices)", True)]
    return ["targets (issue 12):"] + [f"  [{'met' if ok else 'NOT met'}] {text}" for text, ok in checks]


def run_measured(cmd: list[str], env: dict, work: Path, name: str) -> tuple[dict, str]:
    out, result = work / f"{name}.out", work / f"{name}.json"
    wrapper = [sys.executable, "-m", "bench.fetch", "--measure", str(result), str(out), "--", *cmd]
    subprocess.run(wrapper, env=env, cwd=str(ROOT), check=True)
    return json.loads(result.read_text()), out.read_text(errors="replace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--platform", default="ios")
    parser.add_argument("--base", default=DEFAULT_BASE, help="loopback base address of the lab (default %(default)s)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the unmeasured one-device warm-up")
    parser.add_argument("--keep", type=Path, help="directory for the lab and outputs (kept); default: a temporary one")
    parser.add_argument("--no-baseline2", action="store_true",
                        help="skip baseline 2 (cli_command per command: the slowest, and no target refers to it)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from jobs.collect.platforms import get_platform, search_dirs
    from lab.testing import ANSIBLE_PLAYBOOK, ansible_env, running_lab

    platform = get_platform(args.platform)
    if platform is None:
        raise SystemExit(f"no platform file {args.platform}.yml in {', '.join(search_dirs())}")
    plain = playbooks(platform)
    work = args.keep or Path(tempfile.mkdtemp(prefix="devicevault-bench-fetch-"))
    work.mkdir(parents=True, exist_ok=True)
    for name, (text, _, _) in plain.items():
        (work / f"{name}.yml").write_text(text)
    env_plain = ansible_env()
    env_dv = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "PYTHONPATH": str(ROOT)}
    env_dv.pop("DEVICEVAULT_PLATFORMS_DIR", None)
    print(f"fetch benchmark: {args.devices} {args.platform} devices, lab on {args.base}+, work in {work}", flush=True)
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    with running_lab(args.devices, base=args.base, workdir=work / "lab", platforms=[args.platform],
                     timeout=120) as lab:
        hosts, inventory = lab.hosts, str(lab.inventory)
        print(f"  lab up: {len(hosts)} devices in {time.perf_counter() - started:.1f} s (pid {lab.pid})", flush=True)

        def command(variant: str, limit: list[str]) -> tuple[list[str], dict]:
            if variant == "devicevault":
                return [sys.executable, "-m", "bench.fetch", "--inner-fetch", inventory, ",".join(limit)], env_dv
            return [ANSIBLE_PLAYBOOK, "-f", str(FORKS), "-i", inventory, "--limit", ",".join(limit),
                    str(work / f"{variant}.yml")], env_plain

        variants = [("baseline", f"baseline ({plain['baseline'][2]})", plain["baseline"][1]),
                    ("baseline2", f"baseline 2 (cli_command x{len(plain['baseline2'][1])})", plain["baseline2"][1]),
                    ("devicevault", "DeviceVault (fetch_configs)", list(platform.command_lines))]
        if args.no_baseline2:
            variants = [v for v in variants if v[0] != "baseline2"]
        if not args.no_warmup:
            for variant, label, commands in variants:
                cmd, env = command(variant, hosts[:1])
                _, text = run_measured(cmd, env, work, f"warmup-{variant}")
                answers = json.loads(text) if variant == "devicevault" else _outputs_from_json(text, hosts[:1])
                problems = check(f"warm-up {label}", answers, hosts[:1], commands, platform)
                if problems:
                    print("\n".join(problems), file=sys.stderr)
                    return 1
            print(f"  warm-up done ({time.perf_counter() - started:.0f} s)", flush=True)
        rows, failed = [], []
        for variant, label, commands in variants:
            cmd, env = command(variant, hosts)
            lab_before = lab_cpu(lab.pid)
            stats, text = run_measured(cmd, env, work, variant)
            stats["lab_cpu"] = lab_cpu(lab.pid) - lab_before
            if variant == "devicevault":
                try:
                    answers = json.loads(text)
                except ValueError:
                    answers = {h: {"error": "no json output: " + text[-500:]} for h in hosts}
            else:
                answers = _outputs_from_json(text, hosts)
            problems = check(label, answers, hosts, commands, platform)
            failed += problems
            ok = len(hosts) - len({p.split(": ")[1] for p in problems})
            print(f"  {label}: {stats['wall']:.1f} s wall, {stats['cpu']:.1f} CPU-s, {ok}/{len(hosts)} devices answered"
                  + (f", rc {stats['rc']}" if stats["rc"] else ""), flush=True)
            rows.append((label, len(commands), stats))
    n = len(hosts)
    base_cpu = rows[0][2]["cpu"] / n
    print()
    print(f"{args.devices} {args.platform} devices, forks {FORKS}, {time.strftime('%Y-%m-%d %H:%M')}, load average"
          f" {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end ({os.cpu_count()} CPUs; other"
          " processes on the machine inflate wall time far more than CPU-s)")
    print(f"{'variant':<32}{'CPU-s/dev':>10}{'wall s':>8}{'cmds/dev':>9}{'vs baseline':>12}{'vs RANCID*':>11}"
          f"{'detached':>10}{'peak MB':>9}{'procs':>7}{'lab CPU-s':>10}")
    for label, ncmd, s in rows:
        per = s["cpu"] / n
        print(f"{label:<32}{per:>10.2f}{s['wall']:>8.1f}{ncmd:>9}{per / base_cpu:>11.2f}x"
              f"{per / RANCID_CPU_PER_DEVICE:>10.1f}x{(s['cpu'] - s['cpu_main_tree']) / n:>10.2f}"
              f"{s['peak_pss_mb']:>9.0f}{s['peak_procs']:>7}{s['lab_cpu']:>10.1f}")
    print(f"* RANCID ~{RANCID_CPU_PER_DEVICE} CPU-s/device is the figure from ../shared/FINDINGS.md, not measured here.")
    print("  CPU = user+sys of every process each variant started (child subreaper, detached ansible-connection"
          " included); detached = CPU-s/dev of those detached processes alone; peak MB = summed PSS; lab CPU ="
          " the simulated devices, not counted.")
    for line in target_lines(n, base_cpu, rows[-1][2]["cpu"] / n, rows[-1][2]["peak_pss_mb"]):
        print(line)
    lingering = [f"{label}: {s['lingering']}" for label, _, s in rows if s["lingering"]]
    if lingering:
        print(f"  processes still alive {LINGER_GRACE} s after the command ended (idle persistent connections, which"
              " Ansible would otherwise close only at their idle timeout; terminated here): " + ", ".join(lingering))
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    if failed:
        print("\nFAILED: not every device answered every variant:\n  " + "\n  ".join(failed[:20]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--measure":
        result_path, stdout_path, sep, *cmd = sys.argv[2:]
        assert sep == "--" and cmd, "usage: --measure RESULT.json STDOUT -- command ..."
        Path(result_path).write_text(json.dumps(measure_command(cmd, stdout_path)))
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "--inner-fetch":
        sys.exit(inner_fetch(sys.argv[2], sys.argv[3].split(",")))
    sys.exit(main())
