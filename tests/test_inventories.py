"""Inventories as engineers have them (issue 13, item 5), through the CLI and real processes only: vaulted
files and inline ``!vault`` values opened with DeviceVault's vault password setting (in ``devicevault backup``,
the worker, the consumer and the fetch's ansible-playbook), vaulted values masked everywhere, clear one-line
errors for a missing or wrong vault password, and a group made by ``ansible.builtin.constructed`` used with
``backup --group``.

One lab of three devices (ios, eos, nxos), one Redis database, one worker and one consumer for the module; each
test builds its own inventory of the lab's devices (a copy of the lab's, then vaulted) and backs up from it with
``--inventory``. The tests run in file order.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cli.services import free_port
from tests.conftest import DeviceVault, redis_blobs, wait_for
from tests.test_backup_pipeline import _backup

LAB_PASSWORD = "lab-admin"  # the lab's login password (lab/generate_inventory.py): vaulted in every inventory here
VAULT_PASSWORD = "vault-pw-7Qx2-inventories"
ANSIBLE_VAULT = str(Path(sys.executable).parent / "ansible-vault")


@pytest.fixture(scope="module")
def site(tmp_path_factory, redis_server):
    """A lab, a DeviceVault home with the vault password setting, a worker and a consumer."""
    from redis import Redis

    from lab.testing import running_lab

    root = tmp_path_factory.mktemp("inventories")
    password_file = root / "vault-password"
    password_file.write_text(VAULT_PASSWORD + "\n")
    home = root / "home"
    (home / "logs").mkdir(parents=True)
    with running_lab(count=3, base="127.0.178.0", workdir=root / "lab") as lab:
        env = {
            "DEVICEVAULT_HOME": str(home),
            "DEVICEVAULT_REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/5",
            "DEVICEVAULT_DATABASE_URL": f"sqlite:///{home / 'index.sqlite'}",
            "DEVICEVAULT_INVENTORY": str(_inline_vaulted(lab.inventory, root / "default-inventory", password_file)),
            "DEVICEVAULT_VAULT_PASSWORD_FILE": str(password_file),
            "DEVICEVAULT_DEVICE_TIMEOUT": "10",
            "DEVICEVAULT_JOB_TIMEOUT": "120",
            "DEVICEVAULT_LOCK_MARGIN": "10",
            "DEVICEVAULT_COLLECT_RETRIES": "0",
        }
        client = Redis.from_url(env["DEVICEVAULT_REDIS_URL"])
        client.flushdb()
        client.close()
        tool = DeviceVault(env, home)
        tool.lab, tool.root, tool.password_file = lab, root, password_file
        procs = [tool.process("worker", "--name", f"inv-w-{free_port()}", name="worker").start(),
                 tool.process("consumer", "--name", "inv-indexer", name="consumer").start()]
        try:
            yield tool
        finally:
            for proc in procs:
                proc.stop()


def _vault(*args: str, password_file: Path) -> str:
    """``ansible-vault`` itself, as an engineer runs it."""
    proc = subprocess.run([ANSIBLE_VAULT, *args, "--vault-password-file", str(password_file)],
                          capture_output=True, text=True, check=True, env={"LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin"})
    return proc.stdout


def _copy(lab_inventory: Path, out: Path) -> Path:
    shutil.copytree(lab_inventory, out)
    return out


def _inline_vaulted(lab_inventory: Path, out: Path, password_file: Path) -> Path:
    """The lab's inventory with ``ansible_password: !vault |...`` (``ansible-vault encrypt_string``)."""
    inventory = _copy(lab_inventory, out)
    all_yml = inventory / "group_vars" / "all.yml"
    text = all_yml.read_text()
    assert f"ansible_password: {LAB_PASSWORD}\n" in text
    vaulted = _vault("encrypt_string", LAB_PASSWORD, "--name", "ansible_password", password_file=password_file)
    all_yml.write_text(text.replace(f"ansible_password: {LAB_PASSWORD}\n", vaulted.rstrip("\n") + "\n"))
    assert LAB_PASSWORD not in all_yml.read_text()
    return inventory


def _whole_file_vaulted(lab_inventory: Path, out: Path, password_file: Path) -> Path:
    """The lab's inventory with ``group_vars/all.yml`` encrypted as a whole (``ansible-vault encrypt``)."""
    inventory = _copy(lab_inventory, out)
    _vault("encrypt", str(inventory / "group_vars" / "all.yml"), password_file=password_file)
    assert (inventory / "group_vars" / "all.yml").read_text().startswith("$ANSIBLE_VAULT;")
    return inventory


def _no_failures(results: dict[str, dict]) -> None:
    bad = {name: r["error"] for name, r in results.items() if r["status"] not in ("changed", "unchanged")}
    assert not bad, bad


def test_whole_file_vaulted_group_vars_backs_up_every_device(site):
    inventory = _whole_file_vaulted(site.lab.inventory, site.root / "whole", site.password_file)
    results = _backup(site, "--inventory", str(inventory))
    assert set(results) == set(site.lab.hosts)
    assert {r["status"] for r in results.values()} == {"changed"}, results
    devices = {d["name"]: d["versions"] for d in site.json("devices")}
    assert devices == {host: 1 for host in site.lab.hosts}
    for host in site.lab.hosts:  # the stored version is a whole configuration, read back from storage
        assert "hostname" in site("show", host).stdout.lower()


def test_inline_vaulted_password_backs_up_and_a_changed_device_gets_a_version(site):
    changed = site.lab.hosts[0]
    site.lab.control.change(changed)
    results = _backup(site)  # DEVICEVAULT_INVENTORY: the inline-vaulted inventory
    _no_failures(results)
    assert set(results) == set(site.lab.hosts)
    assert {h for h, r in results.items() if r["status"] == "changed"} == {changed}
    assert {d["name"]: d["versions"] for d in site.json("devices")}[changed] == 2


def test_vaulted_values_are_in_the_masking_list(site):
    """Every vaulted value of a host (inline or from a vaulted file) is one of the secrets DeviceVault masks."""
    from jobs.collect.inventory import load_inventory

    settings = site.settings
    for inventory in (settings.inventory, site.root / "whole"):
        hosts = load_inventory(inventory, settings)
        assert set(hosts) == set(site.lab.hosts)
        for host in hosts.values():
            assert LAB_PASSWORD in host.secrets, (inventory, host.name)


@pytest.mark.parametrize("case", ["missing setting", "wrong password", "no such file"])
def test_a_missing_or_wrong_vault_password_is_one_clear_line(site, case):
    whole = site.root / "whole"
    inline = site.settings.inventory
    wrong = site.root / "wrong-password"
    wrong.write_text("not-the-password\n")
    value = {"missing setting": "", "wrong password": str(wrong), "no such file": str(site.root / "nope")}[case]
    cause = {"missing setting": "no vault password is set", "wrong password": "wrong vault password",
             "no such file": "not found"}[case]
    unset = {"ANSIBLE_VAULT_PASSWORD_FILE": "", "ANSIBLE_VAULT_IDENTITY_LIST": ""}  # nor Ansible's own
    tool = DeviceVault({**site.env, **unset, "DEVICEVAULT_VAULT_PASSWORD_FILE": value}, site.home)
    for inventory in (whole, inline):
        proc = tool("backup", "--inventory", str(inventory), "--wait", check=False)
        assert proc.returncode != 0
        assert "Traceback" not in proc.stderr + proc.stdout
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, proc.stderr
        assert str(inventory) in lines[0] and "DEVICEVAULT_VAULT_PASSWORD_FILE" in lines[0], lines[0]
        assert cause in lines[0], lines[0]
        if case != "no such file" and inventory == whole:
            assert str(whole / "group_vars" / "all.yml") in lines[0], lines[0]
        assert VAULT_PASSWORD not in proc.stderr and LAB_PASSWORD not in proc.stderr


def test_a_constructed_group_backs_up_exactly_its_devices_and_moves_no_files(site):
    """``plugin: ansible.builtin.constructed`` (FQCN, a collection-hosted inventory plugin) makes a group from a
    variable (the enable password's ``ansible_become``: ios and eos, not nxos) and keyed groups (``aaa_os_…``);
    ``backup --group`` takes it. Both sort before the lab's site groups, yet no device's storage group changes:
    a new version of a device in them is filed where its earlier ones are, in the index and in git."""
    from jobs.collect.inventory import load_inventory

    inventory = _inline_vaulted(site.lab.inventory, site.root / "constructed", site.password_file)
    (inventory / "zz-constructed.yml").write_text(yaml.safe_dump({
        "plugin": "ansible.builtin.constructed",
        "strict": True,
        "use_vars_plugins": True,  # group_vars/ are where ansible_become is set
        "groups": {"enable_required": "ansible_become | default(false) | bool"},
        "keyed_groups": [{"key": "ansible_network_os", "prefix": "aaa_os"}],
    }))
    expected = {h for h in site.lab.hosts if "-ios-" in h or "-eos-" in h}
    assert expected and expected != set(site.lab.hosts)
    computed = load_inventory(inventory, site.settings)
    assert all("enable_required" in computed[h].groups for h in expected)
    assert all(any(g.startswith("aaa_os_") for g in computed[h].groups) for h in site.lab.hosts)
    before = {d["name"]: d["group"] for d in site.json("devices")}
    assert set(before) == set(site.lab.hosts) and all(g.startswith("site_") for g in before.values()), before
    assert {h: computed[h].group for h in site.lab.hosts} == before
    changed = sorted(expected)[0]
    had = len(site.json("versions", changed))
    site.lab.control.change(changed)
    results = _backup(site, "--inventory", str(inventory), "--group", "enable_required")
    assert set(results) == expected
    _no_failures(results)
    assert results[changed]["status"] == "changed"
    assert {d["name"]: d["group"] for d in site.json("devices")} == before

    def stored():  # the new version's copies, once every target stored it
        versions = site.json("versions", changed)
        copies = versions[-1]["copies"] if len(versions) == had + 1 else []
        return copies if copies and all(c["status"] == "stored" for c in copies) else None

    copies = wait_for(stored, f"the new version of {changed} on every target")
    assert {c["backend"] for c in copies} == {"git", "fs"}
    assert all(f"{before[changed]}/{changed}" in c["ref"] for c in copies), copies
    repo = site.settings.git_repo
    files = subprocess.run(["git", "-C", str(repo), "ls-files"], capture_output=True, text=True, check=True).stdout
    assert not [f for f in files.splitlines() if f.startswith(("enable_required/", "aaa_os_"))], files


class _NetBox:
    """A real HTTP server answering the NetBox API calls of ``netbox.netbox.nb_inventory`` (status, schema, the
    device list, the site lookup; every other list empty) with ``devices``."""

    def __init__(self, devices: list[dict], sites: list[dict]):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlparse

        answers = {
            "/api/status/": {"netbox-version": "4.1.0"},
            "/api/schema/": {"info": {"version": "4.1.0"}, "paths": {
                "/api/dcim/devices/": {"get": {"parameters": []}},
                "/api/virtualization/virtual-machines/": {"get": {"parameters": []}}}},
            "/api/dcim/devices/": {"count": len(devices), "next": None, "previous": None, "results": devices},
            "/api/dcim/sites/": {"count": len(sites), "next": None, "previous": None, "results": sites},
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                body = json.dumps(answers.get(urlparse(self.path).path,
                                              {"count": 0, "next": None, "previous": None, "results": []})).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_netbox_inventory_backs_up_its_devices_filed_by_netbox_site(site):
    """``plugin: netbox.netbox.nb_inventory`` (NetBox's collection, from the ansible package) against a NetBox
    API (a real HTTP server): ``devicevault backup --inventory`` backs up its device (the lab's ios device by
    another name, connection settings from the inventory's group_vars/), and files it under NetBox's
    ``group_by`` site group, not under the keyed groups (``aaa_…``) that sort first."""
    ios = site.lab.host("ios")
    address = yaml.safe_load((site.lab.inventory / "hosts.yml").read_text())
    address = next(h["hosts"][ios]["ansible_host"] for h in address["all"]["children"].values()
                   if (h.get("hosts") or {}).get(ios))
    name = "nb-zrh-ios-01"
    netbox = _NetBox(
        devices=[{"id": 1, "name": name, "site": {"id": 7, "slug": "zrh", "name": "Zurich"},
                  "platform": {"id": 3, "slug": "ios", "name": "IOS"},
                  "primary_ip4": {"id": 5, "address": f"{address}/32"}, "primary_ip": {"id": 5, "address": f"{address}/32"},
                  "role": {"id": 2, "slug": "router", "name": "Router"}, "status": {"value": "active"},
                  "tags": [], "custom_fields": {}, "config_context": {}}],
        sites=[{"id": 7, "slug": "zrh", "name": "Zurich", "time_zone": None, "prefix_count": 0, "region": None,
                "group": None, "tenant": None}])
    try:
        inventory = site.root / "netbox"
        (inventory / "group_vars").mkdir(parents=True)
        lab_vars = site.settings.inventory / "group_vars"  # the lab's settings (vaulted password), ios's too
        (inventory / "group_vars" / "all.yml").write_text(
            (lab_vars / "all.yml").read_text().rstrip("\n") + "\n" + (lab_vars / "ios.yml").read_text())
        (inventory / "netbox.yml").write_text(yaml.safe_dump({
            "plugin": "netbox.netbox.nb_inventory", "api_endpoint": netbox.url, "token": "nb-token-not-used",
            "validate_certs": False, "group_by": ["sites"],
            "keyed_groups": [{"key": "platform", "prefix": "aaa_platform"}],
        }))
        proc = site("backup", "--inventory", str(inventory), "--wait", "--json", check=False)
        assert proc.returncode == 0, proc.stderr
        results = {r["device"]: r for r in json.loads(proc.stdout)["results"]}
        assert set(results) == {name}
        _no_failures(results)
        device = {d["name"]: d for d in site.json("devices")}[name]
        assert device["group"] == "sites_zrh", device
        assert "hostname" in site("show", name).stdout.lower()
    finally:
        netbox.close()


def test_no_clear_password_reaches_index_logs_git_or_redis(site):
    """Neither the devices' password (only ever vaulted here) nor the vault password is anywhere DeviceVault
    writes: the index, every log, the git history, any Redis value (RQ jobs and their metadata included)."""
    secrets = [LAB_PASSWORD.encode(), VAULT_PASSWORD.encode()]
    settings = site.settings
    places = [site.home / "index.sqlite", *sorted((site.home / "logs").rglob("*.log"))]
    assert len(places) >= 3
    for place in places:
        data = place.read_bytes()
        assert not any(s in data for s in secrets), place
    history = subprocess.run(["git", "-C", str(settings.git_repo), "log", "-p", "--all"], capture_output=True).stdout
    assert history and not any(s in history for s in secrets)
    blobs = redis_blobs(settings.redis_url)
    assert blobs
    for blob in blobs:
        assert not any(s in blob for s in secrets), blob[:200]


def test_vault_settings_come_from_devicevault_then_ansibles_own_variables(tmp_path):
    from jobs.settings import Settings, SettingsError

    ansible_only = Settings.load(env={"ANSIBLE_VAULT_PASSWORD_FILE": "pw", "ANSIBLE_VAULT_IDENTITY_LIST": "prod@/v/prod"})
    assert ansible_only.vault_ids() == [("prod", Path("/v/prod")), ("default", Path("pw").absolute())]
    ours = Settings.load(env={"DEVICEVAULT_VAULT_PASSWORD_FILE": "/v/dv", "ANSIBLE_VAULT_PASSWORD_FILE": "pw"})
    assert ours.vault_ids() == [("default", Path("/v/dv"))]
    assert Settings.load(env={}, vault_password_file="lab@/v/lab").vault_ids() == [("lab", Path("/v/lab"))]
    assert Settings.load(env={}).vault_ids() == []
    with pytest.raises(SettingsError, match="cannot prompt"):
        Settings.load(env={"DEVICEVAULT_VAULT_PASSWORD_FILE": "prod@prompt"})
