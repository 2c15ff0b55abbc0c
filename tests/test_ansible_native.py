"""Ansible-native runs (issue 13, items 1 and 2), through real processes only: a real redis-server, the lab
(127.0.101.x), a real ``devicevault worker`` and ``devicevault consumer``, and real ``ansible-playbook`` /
``ansible-runner`` runs of ``playbooks/backup.yml``.

- No secret leaves through Ansible's own channels: not in ``-vvvv`` output, not in an ansible-runner
  artifact directory, not in the ``backup_dir`` files (masked, noise-free by default); with
  ``devicevault_backup_raw`` the files are the device output as read.
- With the ``devicevault.network.devicevault`` callback a plain playbook run is a DeviceVault run: the
  versions a ``devicevault backup`` would make (the same sha256), nothing on a second run, exactly the
  changed devices on a third; the same through ``ansible-runner`` laid out as AWX does (the run names the
  job and template, also on the portal's Runs table); host locks shared with DeviceVault's workers; a Redis
  that cannot be reached fails the playbook's hosts, one line each; every ``-i`` source is read, and a
  vault password typed at ``--ask-vault-pass`` opens the inventory for DeviceVault too.

The tests share the lab, Redis and the index, and run in file order.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cli.services import free_port
from tests.conftest import ROOT, wait_for

ANSIBLE_BIN = Path(sys.executable).parent
CALLBACK = "devicevault.network.devicevault"
RUN_LINE = re.compile(r"DeviceVault run ([0-9a-f]{32}) \((.*?)\): (.*)")
LAB_BASE = "127.0.101.0"
COUNT = 6


@pytest.fixture(scope="module")
def dv(tmp_path_factory, redis_server):
    from lab.control import LabControl
    from lab.generate_inventory import generate_inventory
    from lab.testing import start_lab, stop_lab

    from tests.conftest import DeviceVault

    home = tmp_path_factory.mktemp("ansible-native")
    (home / "logs").mkdir()
    inventory = home / "inventory"
    hosts = generate_inventory(count=COUNT, out=inventory, port=free_port(), base=LAB_BASE)
    env = {
        "DEVICEVAULT_HOME": str(home),
        "DEVICEVAULT_REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/10",  # this module's own database
        "DEVICEVAULT_INVENTORY": str(inventory),
        "DEVICEVAULT_DEVICE_TIMEOUT": "10",
        "DEVICEVAULT_JOB_TIMEOUT": "180",
        "DEVICEVAULT_COLLECT_RETRIES": "0",
    }
    tool = DeviceVault(env, home)
    from redis import Redis

    Redis.from_url(tool.settings.redis_url).flushdb()  # this module's database starts empty
    start_lab(inventory, home / "lab")
    tool.inventory, tool.hosts, tool.lab = inventory, hosts, LabControl(home / "lab")
    worker = tool.process("worker", "--name", f"native-w-{free_port()}", name="worker").start()
    consumer = tool.process("consumer", "--name", "native-indexer", "--claim-idle", "2", name="consumer").start()
    yield tool
    for proc in (worker, consumer):
        proc.stop()
    stop_lab(home / "lab")


def _ansible_env(dv, callback: bool = True, **extra) -> dict[str, str]:
    env = {**os.environ, **dv.env, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_PERSISTENT_COMMAND_TIMEOUT": "20",
           "ANSIBLE_PERSISTENT_CONNECT_TIMEOUT": "20"}
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    if callback:
        env["ANSIBLE_CALLBACKS_ENABLED"] = CALLBACK
    env.update(extra)
    return env


def _playbook(dv, *args: str, callback: bool = True, env: dict[str, str] | None = None,
              timeout: float = 300, inventory: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ANSIBLE_BIN / "ansible-playbook"), "-i", str(inventory or dv.inventory),
         str(ROOT / "playbooks" / "backup.yml"), *args],
        env={**_ansible_env(dv, callback), **(env or {})}, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _playbook_at_a_terminal(dv, inventory: Path, password: str, *args: str) -> subprocess.CompletedProcess:
    """``ansible-playbook --ask-vault-pass`` on a terminal (a pty), the vault password typed at its prompt;
    stdout and stderr are the terminal's output after the prompt."""
    import pexpect

    child = pexpect.spawn(str(ANSIBLE_BIN / "ansible-playbook"),
                          ["-i", str(inventory), str(ROOT / "playbooks" / "backup.yml"), "--ask-vault-pass", *args],
                          env=_ansible_env(dv), cwd=str(ROOT), encoding="utf-8", timeout=300)
    child.expect("Vault password")
    child.sendline(password)
    child.expect(pexpect.EOF)
    child.close()
    return subprocess.CompletedProcess(child.args, child.exitstatus, child.before, "")


def _run_of(proc: subprocess.CompletedProcess) -> tuple[str, str]:
    """The run id and source of the callback's summary line."""
    match = RUN_LINE.search(proc.stdout)
    assert match, f"no DeviceVault run line\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return match.group(1), match.group(2)


def _finished(dv, run_id: str) -> dict:
    """The run's row once the index has every device's result and every copy's outcome."""
    def done():
        rows = [r for r in dv.json("runs", "--limit", "50") if r["run_id"] == run_id]
        return rows[0] if rows and rows[0]["status"] not in ("running", "") and rows[0]["finished_at"] else None

    return wait_for(done, f"run {run_id} to finish", timeout=120)


def _versions(dv) -> dict[str, list[str]]:
    """Every device's version sha256s, oldest first."""
    return {d["name"]: [v["sha256"] for v in dv.json("versions", d["name"])] for d in dv.json("devices")}


def _platforms(dv) -> dict:
    from jobs.collect.inventory import load_inventory
    from jobs.collect.platforms import get_platform

    return {host: get_platform(entry.platform) for host, entry in load_inventory(dv.inventory).items()}


def _secret_values(platform, text: str) -> set[str]:
    found = set()
    for line in text.replace("\r", "").splitlines():
        for pattern in platform.secrets:
            for match in pattern.finditer(line):
                value = match.group("secret" if "secret" in pattern.groupindex else 1)
                if value and value != "<secret hidden>":
                    found.add(value)
    return found


def _printed(dv, host: str) -> str:
    """``host``'s running configuration as the lab device prints it (its volatile parts drawn anew)."""
    from lab.personality import load_personalities
    from lab.render import base_context, render_config

    state = dv.lab.state(host)
    personality = load_personalities()[state["personality"]]
    return render_config(state, "running", personality, base_context(state, personality, command="show"))


def _lab_secrets(dv) -> dict[str, set[str]]:
    """Each lab device's secret values: what its platform file's secret rules match in its running config
    as the device prints it (those it prints the same on every read; every lab device has some)."""
    platforms = _platforms(dv)
    found: dict[str, set[str]] = {}
    for host in dv.hosts:
        reads = [_printed(dv, host), _printed(dv, host)]
        found[host] = {v for v in _secret_values(platforms[host], reads[0]) & _secret_values(platforms[host], reads[1])
                       if len(v) >= 6}
    assert all(found.values()), found
    return found


def _assert_no_secret(dv, where: str, texts: dict[str, str]) -> None:
    """No lab secret value in ``texts``."""
    leaks = [(host, secret[:12], name) for host, secrets in _lab_secrets(dv).items() for secret in secrets
             for name, text in texts.items() if secret in text]
    assert not leaks, f"secrets in {where}: {leaks}"


def _files(directory: Path) -> dict[str, str]:
    return {str(p): p.read_bytes().decode("utf-8", "replace") for p in directory.rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------------- item 2: no secret leaves
def test_plain_playbook_at_vvvv_shows_and_writes_no_secret(dv, tmp_path):
    out = tmp_path / "configs"
    out.mkdir()
    proc = _playbook(dv, "-vvvv", "-e", f"backup_dir={out}", callback=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = _files(out)
    assert len(files) == COUNT
    _assert_no_secret(dv, "ansible-playbook -vvvv output", {"stdout": proc.stdout, "stderr": proc.stderr})
    _assert_no_secret(dv, "backup_dir", files)
    from jobs.collect.inventory import load_inventory
    from jobs.collect.platforms import get_platform

    inv = load_inventory(dv.inventory)
    for host in dv.hosts:
        text = (out / f"{host}.cfg").read_text()
        assert "<secret hidden>" in text, host
        assert (out / f"{host}.cfg").stat().st_mode & 0o777 == 0o600
        noise = get_platform(inv[host].platform).noise
        assert not [ln for ln in text.splitlines() if any(p.search(ln) for p in noise)], host


def test_host_names_that_try_path_traversal_stay_inside_backup_dir(dv, tmp_path):
    """Hosts named ``../escape`` and ``.hidden`` (the same lab device as an ios host): their files are
    percent-encoded names inside ``backup_dir``, masked (copy task) and raw (written by the collect task),
    and nothing is written outside it."""
    import shutil

    import yaml

    inventory = tmp_path / "inventory"
    shutil.copytree(dv.inventory, inventory)
    doc = yaml.safe_load((inventory / "hosts.yml").read_text())
    ios = next(h for h in dv.hosts if "ios" in h)
    for group in doc["all"]["children"].values():
        if ios in (group.get("hosts") or {}):
            for name in ("../escape", ".hidden"):
                group["hosts"][name] = dict(group["hosts"][ios] or {})
    (inventory / "hosts.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    for raw in (False, True):
        out = tmp_path / f"deep-{raw}" / "configs"
        out.mkdir(parents=True)
        extra = ["-e", "devicevault_backup_raw=true"] if raw else []
        proc = _playbook(dv, "-l", "../escape,.hidden", "-e", f"backup_dir={out}", *extra, callback=False,
                         inventory=inventory)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert sorted(p.name for p in out.parent.rglob("*") if p.is_file()) == ["%2E%2E%2Fescape.cfg", "%2Ehidden.cfg"]
        assert ios in (out / "%2E%2E%2Fescape.cfg").read_text()


def test_the_per_host_collect_task_shows_the_masked_view_only(dv, tmp_path):
    playbook = tmp_path / "collect.yml"
    playbook.write_text("- hosts: all\n  gather_facts: false\n  tasks:\n"
                        "    - name: Collect one host\n      devicevault.network.collect: {}\n      register: got\n")
    proc = subprocess.run([str(ANSIBLE_BIN / "ansible-playbook"), "-vvvv", "-i", str(dv.inventory), str(playbook)],
                          env=_ansible_env(dv, callback=False), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _assert_no_secret(dv, "the collect task's -vvvv output", {"stdout": proc.stdout, "stderr": proc.stderr})
    assert proc.stdout.count("<secret hidden>") >= COUNT and '"config":' in proc.stdout


def test_raw_backup_files_only_when_asked_and_equal_to_the_device_output(dv, tmp_path):
    out = tmp_path / "raw"
    out.mkdir()
    proc = _playbook(dv, "-vvv", "-e", f"backup_dir={out}", "-e", "devicevault_backup_raw=true", callback=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _assert_no_secret(dv, "ansible-playbook -vvv output with the raw flag", {"stdout": proc.stdout, "stderr": proc.stderr})
    platforms = _platforms(dv)
    for host, secrets in _lab_secrets(dv).items():
        path = out / f"{host}.cfg"
        text = path.read_text()
        assert path.stat().st_mode & 0o777 == 0o600
        assert all(secret in text for secret in secrets), host
        # every line the device prints the same on every read is in the file as printed (the volatile
        # ones, clocks and re-encrypted secrets, are drawn anew on each read; noise lines say who and when)
        first, second = (_printed(dv, host).replace("\r\n", "\n").splitlines() for _ in range(2))
        noise = platforms[host].noise
        steady = [ln for ln in first if ln in set(second) and ln.strip() and not any(p.search(ln) for p in noise)]
        assert steady and not [ln for ln in steady if ln not in text], host


# ----------------------------------------------------------------------------------- item 1: the callback
def test_playbook_with_the_callback_is_a_devicevault_run(dv):
    import tempfile

    gone = subprocess.Popen(["true"])  # a playbook killed mid-task left its hand-off directory (raw outputs)
    gone.wait()
    left = Path(tempfile.gettempdir()) / f"devicevault-callback-{gone.pid}-left"
    left.mkdir()
    (left / "results.jsonl").write_text("{}\n")
    proc = _playbook(dv)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not left.exists()
    run_id, source = _run_of(proc)
    assert source.startswith("ansible-playbook ") and "@" in source
    row = _finished(dv, run_id)
    assert row["status"] == "succeeded" and row["total"] == COUNT and row["requested_by"] == source
    results = {r["device"]: r for r in dv.json("run", run_id)}
    assert {r["status"] for r in results.values()} == {"changed"}, results
    versions = _versions(dv)
    assert set(versions) == set(dv.hosts) and all(len(v) == 1 for v in versions.values()), versions
    # the versions are exactly what `devicevault backup` makes: it finds every device unchanged
    backup = json.loads(dv("backup", "--wait", "--json").stdout)
    assert {r["status"] for r in backup["results"]} == {"unchanged"}, backup["results"]
    assert _versions(dv) == versions
    # the run and where it came from, in `runs` and `status` (the portal's runs page reads the same row)
    assert any(run_id in line and source in line for line in dv("runs").stdout.splitlines())
    assert any(run_id in line and source in line for line in dv("status", check=False).stdout.splitlines())


def test_second_playbook_run_adds_nothing_and_a_third_after_two_changes_adds_two(dv):
    before = _versions(dv)
    proc = _playbook(dv, "-vvvv")  # the callback's own output, at any verbosity, shows no secret either
    _assert_no_secret(dv, "ansible-playbook -vvvv output with the callback", {"stdout": proc.stdout, "stderr": proc.stderr})
    run_id, _ = _run_of(proc)
    _finished(dv, run_id)
    assert {r["status"] for r in dv.json("run", run_id)} == {"unchanged"}
    assert _versions(dv) == before
    changed = dv.hosts[:2]
    added = {host: dv.lab.change(host) for host in changed}
    proc = _playbook(dv)
    run_id, _ = _run_of(proc)
    _finished(dv, run_id)
    statuses = {r["device"]: r["status"] for r in dv.json("run", run_id)}
    assert {h for h, s in statuses.items() if s == "changed"} == set(changed), statuses
    after = _versions(dv)
    assert {h: len(v) for h, v in after.items()} == {h: len(before[h]) + (h in changed) for h in before}
    for host, lines in added.items():
        diff = dv("diff", host).stdout
        assert all(f"+{line}" in diff.replace("+ ", "+") for line in lines), (host, lines, diff)


def test_a_serial_play_is_one_run_per_batch(dv, tmp_path):
    playbook = yaml.safe_load((ROOT / "playbooks" / "backup.yml").read_text())
    playbook[0]["serial"] = 4
    (tmp_path / "backup.yml").write_text(yaml.safe_dump(playbook, sort_keys=False))
    proc = subprocess.run([str(ANSIBLE_BIN / "ansible-playbook"), "-i", str(dv.inventory), str(tmp_path / "backup.yml")],
                          env=_ansible_env(dv), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = [m.group(1) for m in RUN_LINE.finditer(proc.stdout)]
    assert len(runs) == 2, proc.stdout[-3000:]
    seen: list[str] = []
    for run_id, size in zip(runs, (4, COUNT - 4)):
        row = _finished(dv, run_id)
        results = dv.json("run", run_id)
        assert row["total"] == size and len(results) == size and {r["status"] for r in results} == {"unchanged"}
        seen += [r["device"] for r in results]
    assert sorted(seen) == sorted(dv.hosts)


def test_ansible_runner_laid_out_as_awx_names_the_job_and_keeps_no_secret(dv, tmp_path):
    private = tmp_path / "awx-job"
    (private / "env").mkdir(parents=True)
    shutil.copytree(dv.inventory, private / "inventory")
    (private / "project").mkdir()
    shutil.copytree(ROOT / "playbooks", private / "project" / "playbooks",
                    ignore=shutil.ignore_patterns("__pycache__", "*.tar.gz"))
    shutil.copy(ROOT / "ansible.cfg", private / "project" / "ansible.cfg")
    extravars = {"awx_job_id": 4711, "awx_job_template_name": "Nightly config backup", "awx_user_name": "alice",
                 "tower_job_id": 4711}
    (private / "env" / "extravars").write_text(yaml.safe_dump(extravars))
    envvars = {k: v for k, v in _ansible_env(dv).items()
               if k.startswith(("DEVICEVAULT_", "ANSIBLE_")) and k != "ANSIBLE_CONFIG"}
    envvars["ANSIBLE_CONFIG"] = str(private / "project" / "ansible.cfg")
    (private / "env" / "envvars").write_text(yaml.safe_dump(envvars))
    proc = subprocess.run(
        [str(ANSIBLE_BIN / "ansible-runner"), "run", str(private), "-p", "playbooks/backup.yml", "--ident", "4711"],
        env={**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "PATH": f"{ANSIBLE_BIN}:{os.environ['PATH']}"},
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_id, source = _run_of(proc)
    assert source == "awx job 4711 (Nightly config backup) by alice"
    row = _finished(dv, run_id)
    assert row["requested_by"] == source and row["total"] == COUNT
    from portal import queries  # the portal's Runs page table, from the same index
    from storage.index.db import connect

    with connect(dv.settings.database_url)() as session:
        shown = queries.runs_table(session, limit=50)
    assert shown.set_index("run").loc[run_id, "requested by"] == source
    assert {r["status"] for r in dv.json("run", run_id)} <= {"unchanged", "changed"}
    artifacts = private / "artifacts" / "4711"
    assert (artifacts / "job_events").is_dir() and list((artifacts / "job_events").iterdir())
    _assert_no_secret(dv, "the ansible-runner artifact directory", _files(artifacts))
    _assert_no_secret(dv, "ansible-runner's output", {"stdout": proc.stdout})


def test_a_tower_job_is_named_from_its_tower_variables():
    """Tower passes only the ``tower_*`` twins; without either the source is the user and control host."""
    from jobs.collect.playbook import run_source

    assert run_source({"tower_job_id": 12, "tower_job_template_name": "Backup", "tower_user_name": "bob"}) == \
        "awx job 12 (Backup) by bob"
    assert run_source({"awx_job_id": 7}) == "awx job 7"
    assert re.fullmatch(r"ansible-playbook \S+@\S+", run_source({"awx_job_template_name": "no job id"}))


# ----------------------------------------------------------------------------------- locks, Redis down
def test_a_device_locked_by_a_worker_is_skipped_locked_by_the_playbook(dv):
    from redis import Redis

    from jobs.collect.locks import host_locks

    host = dv.hosts[2]
    before = _versions(dv)
    dv.lab.change(host)  # a change the playbook must not store while another backup holds the device
    with host_locks(Redis.from_url(dv.settings.redis_url), [host], 600) as (locked, busy):
        assert locked == [host]
        proc = _playbook(dv)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_id, _ = _run_of(proc)
    _finished(dv, run_id)
    statuses = {r["device"]: r["status"] for r in dv.json("run", run_id)}
    assert statuses[host] == "skipped_locked" and {s for h, s in statuses.items() if h != host} == {"unchanged"}
    assert _versions(dv) == before
    # the lock is free again: the change lands exactly once, through the worker
    backup = {r["device"]: r["status"] for r in json.loads(dv("backup", "--host", host, "--wait", "--json").stdout)["results"]}
    assert backup == {host: "changed"}
    assert len(_versions(dv)[host]) == len(before.get(host, [])) + 1


def test_a_worker_job_is_skipped_locked_while_the_playbook_holds_the_device(dv):
    from redis import Redis

    from jobs.collect.locks import lock_key

    host = dv.hosts[3]
    before = _versions(dv)
    dv.lab.change(host)
    redis = Redis.from_url(dv.settings.redis_url)
    # the device answers every line 12 s late (under the playbook's 20 s timeouts) until the fault is cleared,
    # and it is cleared only once the worker's job is done: the playbook holds the device's lock all along
    dv.lab.set_fault(host, "slow", delay=12)
    try:
        play = subprocess.Popen(
            [str(ANSIBLE_BIN / "ansible-playbook"), "-i", str(dv.inventory), str(ROOT / "playbooks" / "backup.yml")],
            env=_ansible_env(dv), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: redis.exists(lock_key(host)), f"the playbook to lock {host}", timeout=60, interval=0.05)
        backup = json.loads(dv("backup", "--host", host, "--wait", "--json").stdout)["results"]
    finally:
        dv.lab.clear_fault(host)
    stdout, stderr = play.communicate(timeout=300)
    assert [r["status"] for r in backup] == ["skipped_locked"], backup
    assert play.returncode == 0, stdout[-3000:] + stderr[-3000:]
    run_id, _ = _run_of(subprocess.CompletedProcess([], 0, stdout, stderr))
    _finished(dv, run_id)
    assert {r["device"]: r["status"] for r in dv.json("run", run_id)}[host] == "changed"
    assert len(_versions(dv)[host]) == len(before.get(host, [])) + 1


def test_vaulted_inventories_work_through_the_callback(dv, tmp_path):
    """A whole-file vaulted group_vars/all.yml (the playbook's --vault-password-file, then a password typed at
    its --ask-vault-pass prompt: the callback reads the inventory with the secrets the playbook holds) and an
    inline !vault login password (Ansible's ANSIBLE_VAULT_PASSWORD_FILE, which DeviceVault's setting falls
    back to): the devices are backed up, and nothing of the vault's content shows."""
    password = tmp_path / "vault-password"
    password.write_text("native-vault-password\n")
    password.chmod(0o600)
    vault = [str(ANSIBLE_BIN / "ansible-vault")]
    whole = tmp_path / "whole"
    shutil.copytree(dv.inventory, whole)
    subprocess.run([*vault, "encrypt", "--vault-password-file", str(password), str(whole / "group_vars" / "all.yml")],
                   check=True, capture_output=True, env=_ansible_env(dv, callback=False))
    assert (whole / "group_vars" / "all.yml").read_text().startswith("$ANSIBLE_VAULT")
    inline = tmp_path / "inline"
    shutil.copytree(dv.inventory, inline)
    all_vars = inline / "group_vars" / "all.yml"
    login = yaml.safe_load(all_vars.read_text())["ansible_password"]
    encrypted = subprocess.run([*vault, "encrypt_string", "--vault-password-file", str(password), login,
                                "--name", "ansible_password"], check=True, capture_output=True, text=True,
                               env=_ansible_env(dv, callback=False)).stdout
    all_vars.write_text(re.sub(r"^ansible_password:.*$", lambda _: encrypted.strip(), all_vars.read_text(), flags=re.M))
    for inventory, args, env in ((whole, ["--vault-password-file", str(password)], {}),
                                 (whole, ["--ask-vault-pass"], {}),
                                 (inline, [], {"ANSIBLE_VAULT_PASSWORD_FILE": str(password)})):
        if "--ask-vault-pass" in args:
            proc = _playbook_at_a_terminal(dv, inventory, password.read_text().strip())
        else:
            proc = _playbook(dv, *args, inventory=inventory, env=env)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        run_id, _ = _run_of(proc)
        _finished(dv, run_id)
        statuses = {r["device"]: r["status"] for r in dv.json("run", run_id)}
        assert set(statuses) == set(dv.hosts) and set(statuses.values()) <= {"changed", "unchanged"}, (inventory.name, statuses)
        assert login not in proc.stdout + proc.stderr


def test_redis_unreachable_fails_the_hosts_one_line_each_and_shows_no_password(dv, tmp_path):
    url = f"redis://:not-the-password-xyz@127.0.0.1:{free_port()}/0"
    out = tmp_path / "configs"
    out.mkdir()
    proc = _playbook(dv, "-e", f"backup_dir={out}", env={"DEVICEVAULT_REDIS_URL": url})
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "not-the-password-xyz" not in text
    for host in dv.hosts:
        assert re.search(rf"{host}: not backed up into DeviceVault: DeviceVault's Redis at redis://:REDACTED@.* "
                         r"cannot be reached", text), host
    assert "Traceback" not in text


def test_without_devicevault_importable_the_playbook_runs_as_plain_ansible(dv, tmp_path):
    """An ansible-playbook whose Python cannot import DeviceVault: one warning, and the files as usual."""
    out = tmp_path / "configs"
    out.mkdir()
    blocker = tmp_path / "block"
    (blocker / "jobs").mkdir(parents=True)
    (blocker / "jobs" / "__init__.py").write_text("raise ImportError('DeviceVault is not installed here')\n")
    proc = _playbook(dv, "-e", f"backup_dir={out}", env={"PYTHONPATH": str(blocker)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (proc.stdout + proc.stderr).count("DeviceVault's Python packages cannot be imported") == 1
    assert len(list(out.iterdir())) == COUNT


def test_every_inventory_source_reaches_devicevault(dv, tmp_path):
    """``ansible-playbook -i <lab inventory> -i more.yml``: the callback reads both sources together, as Ansible
    does. A host only the second one has (another name for the lab's ios device, in a site group of its own,
    with the first source's group_vars) is backed up into DeviceVault with its group from that source, and the
    index consumer, which checks each device against its run's inventory, takes it."""
    from jobs.collect.inventory import load_inventory

    ios = next(h for h in dv.hosts if "-ios-" in h)
    extra = "zz-extra-ios-01"
    more = tmp_path / "more" / "more.yml"
    more.parent.mkdir()
    more.write_text(yaml.safe_dump({"all": {"children": {
        "site_extra": {"hosts": {extra: {"ansible_host": load_inventory(dv.inventory)[ios].address}}},
        "ios": {"hosts": {extra: None}}}}}))
    proc = _playbook(dv, "-i", str(more))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_id, _ = _run_of(proc)
    row = _finished(dv, run_id)
    assert row["status"] == "succeeded" and row["total"] == COUNT + 1, row
    statuses = {r["device"]: r["status"] for r in dv.json("run", run_id)}
    assert statuses[extra] == "changed" and set(statuses) == {*dv.hosts, extra}, statuses
    devices = {d["name"]: d for d in dv.json("devices")}
    assert devices[extra]["group"] == "site_extra" and devices[extra]["versions"] == 1, devices[extra]
