"""Helpers to run a throw-away lab in tests (reusable by any test module).

    from lab.testing import running_lab, run_playbook

    with running_lab(count=5, base="127.0.30.0") as lab:     # one device per platform
        res = run_playbook(lab.inventory, PLAYBOOK_TEXT, extra_vars={"x": 1})
        lab.control.change(lab.hosts[0])

pytest fixture example::

    @pytest.fixture(scope="session")
    def lab(tmp_path_factory):
        with running_lab(5, base="127.0.30.0", workdir=tmp_path_factory.mktemp("lab")) as h:
            yield h
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from jobs.settings import ANSIBLE_CFG, DATA_DIR

from . import commands
from .control import LabControl
from .generate_inventory import generate_inventory

#: ansible-playbook of this Python environment (a checkout's .venv or wherever DeviceVault is installed)
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port currently free (on loopback)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class LabHandle:
    inventory: Path         # inventory directory (hosts.yml + group_vars)
    state_dir: Path
    port: int
    hosts: list             # inventory hostnames served
    pid: int
    control: LabControl

    def host(self, platform: str) -> str:
        """First host of ``platform`` (ios, eos, nxos, junos, routeros)."""
        return next(h for h in self.hosts if f"-{platform}-" in h)


def start_lab(inventory, state_dir, timeout: float = 60, personalities_dir=None) -> int:
    """Start a daemon lab for ``inventory``; returns its pid once all devices answer."""
    return commands.up(inventory, state_dir, daemon=True, timeout=timeout,
                       personalities_dir=str(personalities_dir) if personalities_dir else None)


def stop_lab(state_dir) -> None:
    commands.down(state_dir)


@contextlib.contextmanager
def running_lab(count: int = 5, base: str = "127.0.30.0", port: int | None = None, workdir=None,
                platforms: list[str] | str | None = None, timeout: float = 60, keep: bool = False,
                personalities_dir=None):
    """Generate an inventory of ``count`` devices, run a lab for it, yield a :class:`LabHandle`, stop it.
    ``platforms="all"`` serves every personality; ``personalities_dir`` adds a site's own."""
    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="devicevault-lab-"))
    port = port or free_port()
    inv = tmp / "inventory"
    hosts = generate_inventory(count, inv, port=port, base=base, platforms=platforms,
                               personalities_dir=str(personalities_dir) if personalities_dir else None)
    sd = tmp / "state"
    pid = start_lab(inv, sd, timeout, personalities_dir)
    try:
        yield LabHandle(inventory=inv, state_dir=sd, port=port, hosts=hosts, pid=pid, control=LabControl(sd))
    finally:
        stop_lab(sd)
        if not keep and not workdir:
            shutil.rmtree(tmp, ignore_errors=True)


def ansible_env(**overrides) -> dict:
    """Environment for running ansible-playbook against the lab (UTF-8 locale, DeviceVault's ansible.cfg)."""
    env = dict(os.environ)
    env.update({"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "ANSIBLE_CONFIG": str(ANSIBLE_CFG),
                "ANSIBLE_PERSISTENT_COMMAND_TIMEOUT": "20", "ANSIBLE_PERSISTENT_CONNECT_TIMEOUT": "20",
                "ANSIBLE_NOCOLOR": "1", "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
                "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"})
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def run_playbook(inventory, playbook: str, extra_vars: dict | None = None, limit: str | None = None,
                 timeout: float = 120, **env) -> tuple[int, dict]:
    """Run ``playbook`` (a path or YAML text) with the json callback; returns (rc, parsed json output)."""
    with tempfile.TemporaryDirectory() as td:
        pb = Path(playbook) if "\n" not in playbook and Path(playbook).exists() else Path(td) / "pb.yml"
        if pb.parent == Path(td):
            pb.write_text(playbook)
        cmd = [ANSIBLE_PLAYBOOK, "-i", str(inventory), str(pb)]
        if extra_vars:
            cmd += ["-e", json.dumps(extra_vars)]
        if limit:
            cmd += ["--limit", limit]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ansible_env(**env),
                           cwd=str(DATA_DIR))
        try:
            data = json.loads(p.stdout[p.stdout.index("{"):])
        except ValueError:
            data = {"raw_stdout": p.stdout, "raw_stderr": p.stderr}
        return p.returncode, data


def task_results(data: dict, task_index: int = 0) -> dict:
    """{host: result} of the ``task_index``-th task of the first play in json-callback output."""
    return data["plays"][0]["tasks"][task_index]["hosts"]
