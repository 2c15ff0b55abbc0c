"""DeviceVault's own network_cli plugins (devicevault.network.cli), run by real Ansible against the lab.

The plugins hold no vendor knowledge: the platform file named by ``devicevault_platform`` (looked up in
``devicevault_platforms_dir`` first) says how to talk to the device. ``ansible_network_os`` is set to
``devicevault.network.cli`` (as in the lab inventory), so the platform can
only come from the option that Ansible hands to the ``ansible-connection`` process.
"""
from __future__ import annotations

import shutil

import pytest

from lab.testing import run_playbook, running_lab, task_results

CLI = {"ansible_network_os": "devicevault.network.cli"}
RUN = """
- hosts: all
  gather_facts: false
  tasks:
    - ansible.netcommon.cli_command:
        command: "{{ command }}"
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with running_lab(count=2, base="127.0.132.0", platforms=["asa", "fortios"],
                     workdir=tmp_path_factory.mktemp("dvlab")) as handle:
        yield handle


def run(lab, platform: str, command: str, command_timeout: int = 10, **extra) -> dict:
    host = lab.host(platform)
    rc, data = run_playbook(lab.inventory, RUN, extra_vars={"command": command, **extra}, limit=host,
                            ANSIBLE_PERSISTENT_COMMAND_TIMEOUT=command_timeout)
    return task_results(data)[host]


def test_asa_enable_with_the_become_password(lab):
    res = run(lab, "asa", "show curpriv", **CLI)
    assert not res.get("failed"), res.get("msg")
    assert "Current privilege level : 15" in res["stdout"]


def test_asa_wrong_become_password_fails_fast_and_says_why(lab):
    """Fails on the device's answer, not on the command timeout: with a command timeout far beyond the
    playbook's own deadline (run_playbook's 120 s), waiting for it could not end in this message."""
    res = run(lab, "asa", "show curpriv", command_timeout=3600, ansible_become_password="not-the-password", **CLI)
    assert res.get("failed")
    assert "failed to elevate privilege with 'enable'" in res["msg"] and "Invalid password" in res["msg"]
    assert "timeout" not in res["msg"].lower()


def test_device_errors_fail_the_command(lab):
    res = run(lab, "fortios", "show frobnicate", **CLI)
    assert res.get("failed") and "Command fail" in res["msg"]


def test_platform_comes_from_devicevault_platform(lab):
    res = run(lab, "fortios", "get system status", **CLI)   # FortiOS prompts, paging commands
    assert not res.get("failed"), res.get("msg")
    assert f"Hostname: {lab.host('fortios')}" in res["stdout"]
    res = run(lab, "fortios", "get system status", devicevault_platform="", **CLI)
    assert res.get("failed") and "set the host variable devicevault_platform" in res["msg"]
    res = run(lab, "fortios", "get system status", devicevault_platform="nosuch", **CLI)
    assert res.get("failed") and "no platform file nosuch.yml" in res["msg"]


def test_a_site_platform_is_a_data_file(lab, tmp_path):
    """A platform in devicevault_platforms_dir (here a renamed copy) serves hosts without any code."""
    from jobs.collect.platforms import BUILTIN_DIR

    shutil.copy(BUILTIN_DIR / "fortios.yml", tmp_path / "site-fw.yml")
    res = run(lab, "fortios", "get system status", devicevault_platform="site-fw",
              devicevault_platforms_dir=str(tmp_path), **CLI)
    assert not res.get("failed"), res.get("msg")
    assert "Serial-Number: FGT60F" in res["stdout"]


COLLECT = """
- hosts: all
  gather_facts: false
  tasks:
    - devicevault.network.collect: {}
"""


def test_collect_action_picks_the_platform_file_by_the_loaders_rule(lab):
    """``devicevault.network.collect`` without arguments resolves the host's platform from its variables
    (devicevault_platform, else ansible_network_os) and sends the file's commands in order."""
    host = lab.host("fortios")
    rc, data = run_playbook(lab.inventory, COLLECT, limit=host, ANSIBLE_PERSISTENT_COMMAND_TIMEOUT=10)
    res = task_results(data)[host]
    assert not res.get("failed"), res.get("msg")
    assert len(res["outputs"]) == 2 and f"Hostname: {host}" in res["outputs"][0]
    rc, data = run_playbook(lab.inventory, COLLECT, limit=host, extra_vars={"devicevault_platform": ""},
                            ANSIBLE_PERSISTENT_COMMAND_TIMEOUT=10)
    res = task_results(data)[host]
    assert res.get("failed") and "no platform: set the host variable devicevault_platform" in res["msg"]
