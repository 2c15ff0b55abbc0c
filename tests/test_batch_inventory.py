"""The batch's own inventory (``jobs.collect.inventory.write_batch_inventory``): a batch's ``ansible-playbook``
reads a static inventory of just its hosts, and every variable of every host must be what the whole inventory
gives it: nested groups and their precedence (depth, ``ansible_group_priority``, names), inline host and group
variables, ``group_vars``/``host_vars`` files, an inline ``!vault`` value, and groups made by
``ansible.builtin.constructed``. Both sides are parsed by ansible-core itself (no DeviceVault code decides what
the variables are), and a parsed inventory is reused only while its files are unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.collect.inventory import open_inventory, write_batch_inventory
from jobs.settings import Settings

VAULT_PASSWORD = "batch-inventory-vault-pw"
#: magic variables that name the inventory itself or every host of it: the batch's own differ by design
NOT_COMPARED = {"inventory_file", "inventory_dir", "groups", "playbook_dir", "ansible_config_file"}

HOSTS = """\
all:
  vars:
    ansible_connection: ansible.netcommon.network_cli
    site_name: from-all
    nested: {a: 1, b: {c: 2}}
  children:
    region_eu:
      vars: {site_name: from-region, region_only: eu}
      children:
        site_ams:
          vars: {site_name: from-site}
          hosts:
            r1:
              ansible_host: 127.0.0.11
              ansible_password: !vault |
{vault}
            r2: {ansible_host: 127.0.0.12, nested: {b: {d: 3}}}
        site_fra:
          hosts:
            r3: {ansible_host: 127.0.0.13}
    priority_low:
      vars: {ansible_group_priority: 1, contested: low}
      hosts: {r2: {}, r3: {}}
    priority_high:
      vars: {ansible_group_priority: 10, contested: high}
      hosts: {r3: {}}
    ios:
      hosts: {r1: {}, r2: {}, r4: {}}
    ungrouped:
      hosts: {r5: {ansible_host: 127.0.0.15}}
"""


def _vault_inline(value: str, password_file: Path) -> str:
    out = subprocess.run([str(Path(sys.executable).parent / "ansible-vault"), "encrypt_string", value,
                          "--vault-password-file", str(password_file)],
                         capture_output=True, text=True, check=True, env={"LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin"})
    return "\n".join("                " + line.strip() for line in out.stdout.splitlines()[1:] if line.strip())


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch-inventory")
    password_file = root / "vault-password"
    password_file.write_text(VAULT_PASSWORD + "\n")
    inv = root / "inventory"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "host_vars").mkdir()
    (inv / "01-hosts.yml").write_text(HOSTS.replace("{vault}", _vault_inline("s3cret-r1", password_file)))
    (inv / "02-constructed.yml").write_text(
        "plugin: ansible.builtin.constructed\nstrict: true\n"
        "groups:\n  eu_ios: \"'ios' in group_names and region_only is defined\"\n"
        "compose:\n  composed_name: inventory_hostname ~ '-' ~ site_name\n")
    (inv / "group_vars" / "ios.yml").write_text("ansible_network_os: cisco.ios.ios\nsite_name: from-ios-file\n")
    (inv / "group_vars" / "eu_ios.yml").write_text("eu_ios_file: yes\n")
    (inv / "group_vars" / "all.yml").write_text("ansible_user: admin\n")
    (inv / "host_vars" / "r2.yml").write_text("host_file_var: r2-file\ncontested: host\n")
    return inv, Settings.load(env={"DEVICEVAULT_VAULT_PASSWORD_FILE": str(password_file),
                                   "DEVICEVAULT_HOME": str(root / "home")})


def _variables(opened, name: str) -> dict:
    with opened.lock:
        found = opened.variables.get_vars(host=opened.manager.get_host(name), include_hostvars=False)
    return {k: str(v) if type(v).__name__ == "EncryptedString" else v for k, v in found.items() if k not in NOT_COMPARED}


@pytest.mark.parametrize("batch", [["r1", "r2", "r3", "r4", "r5"], ["r3"], ["r2", "r5"]])
def test_every_variable_is_the_whole_inventorys(inventory, batch, tmp_path):
    path, settings = inventory
    whole = open_inventory(path, settings)
    written = write_batch_inventory(whole, batch, tmp_path / "batch")
    assert written is not None
    alone = open_inventory(written, Settings.load(env={"DEVICEVAULT_VAULT_PASSWORD_FILE": settings.vault_password_file,
                                                       "DEVICEVAULT_INVENTORY_REUSE": "0"}))
    assert sorted(h.name for h in alone.manager.get_hosts()) == sorted(batch)
    for name in batch:
        assert _variables(alone, name) == _variables(whole, name), name
    if "r1" in batch:
        assert _variables(alone, "r1")["ansible_password"] == "s3cret-r1"
        assert "s3cret-r1" not in written.read_text()  # still vaulted in the file
    if "r3" in batch:
        assert _variables(alone, "r3")["contested"] == "high"
    if "r2" in batch:
        r2 = _variables(alone, "r2")
        assert (r2["contested"], r2["eu_ios_file"], r2["composed_name"]) == ("host", True, "r2-from-site")


def test_a_parsed_inventory_is_reused_until_a_file_changes(inventory):
    path, settings = inventory
    first = open_inventory(path, settings)
    assert open_inventory(path, settings) is first
    host_file = path / "host_vars" / "r2.yml"
    before = host_file.stat().st_mtime_ns
    host_file.write_text(host_file.read_text() + "added_later: 1\n")
    os.utime(host_file, ns=(before + 1_000_000_000, before + 1_000_000_000))
    again = open_inventory(path, settings)
    assert again is not first
    assert _variables(again, "r2")["added_later"] == 1
    (path / "host_vars" / "r3.yml").write_text("new_file_var: 3\n")  # a new file: Ansible must look again
    assert _variables(open_inventory(path, settings), "r3")["new_file_var"] == 3
    never = Settings.load(env={"DEVICEVAULT_VAULT_PASSWORD_FILE": settings.vault_password_file,
                               "DEVICEVAULT_INVENTORY_REUSE": "0"})
    assert open_inventory(path, never) is not open_inventory(path, never)
