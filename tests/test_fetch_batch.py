"""``jobs.collect.fetch.fetch_configs`` on whole batches, watched from the lab's side.

The real fetch against one lab of 10 devices (two of each built-in lab platform); the lab counts the SSH
connections it holds (``LabControl.sessions()``), so these tests see what a batch does to the devices: how
many sessions it opens at once, whether it leaves any open, and whether a hung, silent or wrongly configured
device holds up or breaks the others. They hold for any implementation of the fetch (one process per
device, or threads in one process).
"""

from __future__ import annotations

import shutil
import socket
import threading
from pathlib import Path

import pytest
import yaml

from jobs import errors
from lab.testing import running_lab

LAB_SIZE = 10
JOB_TIMEOUT = 180  # a hard limit far above anything these batches should take


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with running_lab(count=LAB_SIZE, base="127.0.170.0", workdir=tmp_path_factory.mktemp("fetch-batch-lab")) as handle:
        yield handle


def _settings(home: Path, inventory: Path, **explicit):
    from jobs.settings import Settings

    return Settings.load(env={}, home=home, inventory=inventory, job_timeout=JOB_TIMEOUT, **explicit)


def _fetch(hosts, inventory: Path, tmp_path: Path, **explicit):
    from jobs.collect.fetch import fetch_configs

    return fetch_configs(hosts, inventory=inventory, settings=_settings(tmp_path / "home", inventory, **explicit))


def _assert_fetched(outcomes, hosts, lab_hosts) -> None:
    """Every host in ``hosts`` has outputs and no error, and its outputs are its own (they name it and no
    other lab device): a batch must never hand one device's configuration to another."""
    failed = {h: str(outcomes[h].error) for h in hosts if outcomes[h].error is not None or not outcomes[h].outputs}
    assert not failed, failed
    for host in hosts:
        text = "\n".join(outcomes[host].outputs)
        assert host in text, f"{host}: its outputs do not name it"
        others = [h for h in lab_hosts if h != host and h in text]
        assert not others, f"{host}: its outputs name {others}"


def _assert_failed_with(outcomes, host: str, *kinds: type[errors.DeviceError]) -> None:
    outcome = outcomes[host]
    assert outcome.outputs is None and isinstance(outcome.error, kinds), (host, repr(outcome.error))
    assert outcome.error.device == host and str(outcome.error).startswith(f"{host}: "), str(outcome.error)


def _wait_idle(lab, timeout: float = 60) -> None:
    """Start from a lab with no SSH session open (an earlier test's fetch may still hold some)."""
    lab.control.wait_sessions(lambda s: s["open"] == 0, timeout=timeout)


def _inventory_copy(lab, tmp_path: Path) -> Path:
    inventory = tmp_path / "inventory"
    shutil.copytree(lab.inventory, inventory)
    return inventory


class BlackHole:
    """A TCP listener on loopback that accepts every connection and never sends a byte."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # closed
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.listener.close()
        for conn in self.accepted:
            conn.close()
        self.thread.join(5)


def test_forks_limit_the_sessions_open_at_once(lab, tmp_path):
    _wait_idle(lab)
    assert lab.control.reset_session_peak()["peak"] == 0
    outcomes = _fetch(lab.hosts, lab.inventory, tmp_path, forks=3, device_timeout=15)
    seen = lab.control.sessions()
    _assert_fetched(outcomes, lab.hosts, lab.hosts)
    assert 1 <= seen["peak"] <= 3, seen
    assert set(seen["per_device"]) == set(lab.hosts), seen  # the lab saw every device's session


def test_no_session_is_left_open_after_a_batch(lab, tmp_path):
    outcomes = _fetch(lab.hosts, lab.inventory, tmp_path, forks=LAB_SIZE, device_timeout=15)
    _assert_fetched(outcomes, lab.hosts, lab.hosts)
    try:
        lab.control.wait_sessions(lambda s: s["open"] == 0, timeout=20)
    except TimeoutError as e:
        pytest.fail(f"fetch_configs returned, but the devices still hold its SSH sessions: {e}")


def test_hung_devices_time_out_and_the_rest_of_the_batch_is_fetched(lab, tmp_path):
    hung, healthy = lab.hosts[::2], lab.hosts[1::2]  # one of each platform hangs, the other answers
    for host in hung:
        lab.control.set_fault(host, "hang")
    try:
        outcomes = _fetch(lab.hosts, lab.inventory, tmp_path, forks=LAB_SIZE, device_timeout=5)
    finally:
        for host in hung:
            lab.control.clear_fault(host)
    _assert_fetched(outcomes, healthy, lab.hosts)
    for host in hung:
        _assert_failed_with(outcomes, host, errors.DeviceTimeout)


def test_a_black_hole_in_the_batch_fails_alone(lab, tmp_path):
    inventory = _inventory_copy(lab, tmp_path)
    doc = yaml.safe_load((inventory / "hosts.yml").read_text())
    groups = doc["all"]["children"]
    ios = lab.host("ios")
    hole = BlackHole()
    name = "bh-ios-99"
    for group in groups.values():  # every group of an ios lab host (its site and ios), same variables
        if ios in (group.get("hosts") or {}):
            group["hosts"][name] = {"ansible_host": "127.0.0.1", "ansible_port": hole.port}
    (inventory / "hosts.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    healthy = lab.hosts[:7]
    try:
        outcomes = _fetch([name, *healthy], inventory, tmp_path, forks=8, device_timeout=8)
        assert hole.accepted, "the fetch never connected to the black hole"
    finally:
        hole.close()
    _assert_fetched(outcomes, healthy, lab.hosts)
    _assert_failed_with(outcomes, name, errors.DeviceTimeout, errors.ConnectionLost)


def test_a_wrong_password_fails_only_that_device(lab, tmp_path):
    inventory = _inventory_copy(lab, tmp_path)
    wrong = lab.host("ios")
    (inventory / "host_vars").mkdir(exist_ok=True)
    (inventory / "host_vars" / f"{wrong}.yml").write_text("ansible_password: not-the-lab-password\n")
    outcomes = _fetch(lab.hosts, inventory, tmp_path, forks=LAB_SIZE, device_timeout=15)
    _assert_failed_with(outcomes, wrong, errors.AuthenticationFailed)
    _assert_fetched(outcomes, [h for h in lab.hosts if h != wrong], lab.hosts)


def test_a_host_name_that_breaks_ansible_fails_alone_with_the_reason(lab, tmp_path):
    """A 300-character host name (the same device as a lab host) in a batch with every lab device: Ansible
    cannot keep per-host files under that name, so it fails with Ansible's own reason, permanently (a retry
    would fail the same way); the other ten are fetched."""
    inventory = _inventory_copy(lab, tmp_path)
    doc = yaml.safe_load((inventory / "hosts.yml").read_text())
    ios = lab.host("ios")
    long_name = "core-" + "x" * 295
    for group in doc["all"]["children"].values():  # same groups and variables as the ios host
        if ios in (group.get("hosts") or {}):
            group["hosts"][long_name] = dict(group["hosts"][ios] or {})
    (inventory / "hosts.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    outcomes = _fetch([long_name, *lab.hosts], inventory, tmp_path, forks=LAB_SIZE + 1, device_timeout=15)
    _assert_fetched(outcomes, lab.hosts, lab.hosts)
    _assert_failed_with(outcomes, long_name, errors.CollectionFailed)
    assert not outcomes[long_name].error.transient
    assert "File name too long" in str(outcomes[long_name].error), str(outcomes[long_name].error)
