"""``pip install .`` (not editable) into a new virtualenv outside the checkout gives a working ``devicevault``.

The package is built and installed offline from a copy of the checkout (``--no-index --no-build-isolation``:
the build uses the project's setuptools). The new virtualenv sees the project's third-party dependencies
(Ansible, RQ, Streamlit, ...) through a ``.pth`` file naming the project's site-packages, as if they had been
installed into it; their console scripts (ansible-playbook, ...) are copied to its ``bin/`` pointing at its
own Python. Everything then runs from a directory outside the checkout, with the checkout not on
``sys.path``: the installed package must find its ansible.cfg, playbooks (the collection, the platform
files), the lab inventory, the portal and the index migrations by itself, and ``devicevault demo`` must back
up a lab (three devices of the installed lab's personalities) and stop again with ``demo --stop``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import urllib.request
from importlib import metadata
from pathlib import Path

import pytest

from cli.services import free_port

ROOT = Path(__file__).resolve().parent.parent
PROJECT_SITE = Path(sysconfig.get_paths()["purelib"])  # the project's .venv: the third-party dependencies
PROJECT_BIN = Path(sys.executable).parent
#: three lab devices: two vendor collections and DeviceVault's own cli terminal/cliconf plugins (asa)
PLATFORMS = "ios,asa,junos"
LAB_BASE = "127.0.180.0"
#: what a build must not see from the checkout (and what it would leave in it)
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "var", "build", "dist", "*.egg-info", "__pycache__", "*.py[co]",
                                    ".pytest_cache", "tests", "bench")


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything pointing into the checkout or at its settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DEVICEVAULT_") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    path = [p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p and not p.startswith(str(ROOT))]
    env.update(PATH=os.pathsep.join(path), LC_ALL="C.UTF-8", LANG="C.UTF-8")
    env.update(extra)
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _files(top: Path) -> set[str]:
    return {str(p.relative_to(top)) for p in top.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv, its site-packages, the copy of the checkout it was built from, a directory outside both)."""
    setuptools = metadata.version("setuptools")
    assert tuple(int(part) for part in setuptools.split(".")[:2]) >= (70, 1), (
        f"setuptools {setuptools} cannot build a wheel offline: pip install -r requirements.txt")
    base = tmp_path_factory.mktemp("packaging")
    src = base / "src"  # a copy: setuptools writes build/ and *.egg-info into the tree it builds
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE, symlinks=True)
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=base, env=_clean_env())
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=base, env=_clean_env()).stdout.strip())
    (site / "devicevault-test-dependencies.pth").write_text(f"{PROJECT_SITE}\n")
    for script in PROJECT_BIN.iterdir():  # the dependencies' commands, as pip would have written them here
        if script.name == "devicevault" or (venv / "bin" / script.name).exists() or not script.is_file():
            continue
        with open(script, "rb") as f:
            first = f.readline()
        if first.strip() == f"#!{PROJECT_BIN / 'python'}".encode():
            target = venv / "bin" / script.name
            target.write_bytes(f"#!{python}\n".encode() + script.read_bytes()[len(first):])
            target.chmod(0o755)
    # pip install . -- --ignore-installed: the project's editable devicevault (seen through the .pth) is
    # neither uninstalled nor counted as already there
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index",
          "--no-build-isolation", "--ignore-installed", "."], cwd=src, env=_clean_env())
    outside = base / "elsewhere"
    outside.mkdir()
    return venv, site, src, outside


def test_the_installed_package_finds_its_files_without_the_checkout(installed):
    venv, site, src, outside = installed
    probe = """
import json, sys
import cli, jobs, lab, portal, storage
from jobs import settings as s
from storage.index import db
print(json.dumps({
    "modules": [m.__file__ for m in (cli, jobs, lab, portal, storage, s, db)],
    "sys_path": sys.path,
    "data": str(s.DATA_DIR), "cfg": str(s.ANSIBLE_CFG), "playbooks": str(s.PLAYBOOKS_DIR),
    "inventory": str(s.Settings.load().inventory), "lab_inventory": str(s.LAB_INVENTORY),
    "portal": str(s.PORTAL_APP), "migrations": str(db.MIGRATIONS),
}))
"""
    found = json.loads(_run([venv / "bin" / "python", "-c", probe], cwd=outside, env=_clean_env()).stdout)
    for module in found["modules"]:
        assert Path(module).is_relative_to(site), module
    # of the checkout only the project's site-packages (the dependencies) is on the path, not its sources
    inside = [p for p in found["sys_path"] if Path(p or outside).resolve().is_relative_to(ROOT)]
    assert inside == [str(PROJECT_SITE)], found["sys_path"]
    data = Path(found["data"])
    assert data == site / "jobs" / "share"
    assert Path(found["cfg"]) == data / "ansible.cfg" and Path(found["cfg"]).is_file()
    assert Path(found["playbooks"]) == data / "playbooks"
    # every file of the playbooks tree (backup.yml, platform files, the devicevault.network collection)
    assert _files(src / "playbooks") == _files(data / "playbooks")
    assert (data / "playbooks" / "backup.yml").is_file()
    assert _files(src / "inventories") == _files(data / "inventories")
    assert Path(found["inventory"]) == Path(found["lab_inventory"]) == data / "inventories" / "lab"
    assert Path(found["portal"]) == site / "portal" / "app.py" and Path(found["portal"]).is_file()
    migrations = Path(found["migrations"])
    assert migrations.is_relative_to(site) and (migrations / "env.py").is_file()
    assert sorted(p.name for p in (migrations / "versions").glob("*.py")) == \
        sorted(p.name for p in (src / "storage" / "index" / "migrations" / "versions").glob("*.py"))
    # Ansible reads the installed ansible.cfg: the lab inventory parses and the collection's plugins load
    env = _clean_env(ANSIBLE_CONFIG=found["cfg"], ANSIBLE_HOME=str(outside / "ansible-home"))
    hosts = json.loads(_run([venv / "bin" / "ansible-inventory", "-i", found["inventory"], "--list"],
                            cwd=outside, env=env).stdout)["_meta"]["hostvars"]
    assert len(hosts) == len(_inventory_hosts(src / "inventories" / "lab" / "hosts.yml"))
    doc = _run([venv / "bin" / "ansible-doc", "-t", "cliconf", "devicevault.network.cli", "--json"],
               cwd=outside, env=env).stdout
    assert Path(json.loads(doc)["devicevault.network.cli"]["doc"]["filename"]).is_relative_to(data / "playbooks")


def _inventory_hosts(hosts_yml: Path) -> set[str]:
    import yaml

    names: set[str] = set()

    def walk(group: dict) -> None:
        names.update((group or {}).get("hosts") or {})
        for child in ((group or {}).get("children") or {}).values():
            walk(child)

    walk(yaml.safe_load(hosts_yml.read_text())["all"])
    return names


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead (PID 1 may not reap it)
    except (FileNotFoundError, IndexError):
        return False


def _wait(condition, what: str, timeout: float = 60):
    from tests.conftest import wait_for

    return wait_for(condition, what, timeout)


def _health(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
            return response.read().strip() == b"ok"
    except OSError:
        return False


def test_devicevault_demo_runs_from_the_installed_package(installed):
    venv, site, src, outside = installed
    home = outside / "home"
    inventory = outside / "lab-inventory"
    env = _clean_env(DEVICEVAULT_HOME=str(home), DEVICEVAULT_INVENTORY=str(inventory),
                     DEVICEVAULT_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    _run([venv / "bin" / "python", "-m", "lab.generate_inventory", "--count", "3", "--platforms", PLATFORMS,
          "--out", inventory, "--port", free_port(), "--base", LAB_BASE], cwd=outside, env=env)
    hosts = sorted(_inventory_hosts(inventory / "hosts.yml"))
    devicevault = venv / "bin" / "devicevault"
    assert devicevault.read_text().startswith(f"#!{venv / 'bin' / 'python'}")
    portal_port = free_port()
    try:
        demo = _run([devicevault, "demo", "--timeout", "240", "--portal-port", portal_port], cwd=outside, env=env,
                    timeout=400)
        assert f"backing up {len(hosts)} devices" in demo.stdout, demo.stdout
        devices = json.loads(_run([devicevault, "devices", "--json"], cwd=outside, env=env).stdout)
        assert sorted(d["name"] for d in devices) == hosts
        assert all(d["status"] == "changed" and d["versions"] == 1 for d in devices), devices
        log = _run(["git", "-C", home / "git", "log", "--format=%s"], cwd=outside, env=env).stdout
        assert all(host in log for host in hosts), log
        assert _run([devicevault, "show", hosts[0], "1"], cwd=outside, env=env).stdout.strip()
        _wait(lambda: _health(portal_port), "the installed portal to answer")
        pids = {p.name: int(p.read_text()) for p in (home / "run").glob("*.pid")}
        pids.update({p.name: int(p.read_text()) for p in (home / "lab").glob("*.pid")})
        pids["redis"] = int((home / "redis" / "redis.pid").read_text())
        assert {"worker-1.pid", "worker-2.pid", "consumer.pid", "scheduler.pid", "portal.pid"} <= set(pids), pids
    finally:
        stop = subprocess.run([str(devicevault), "demo", "--stop"], cwd=outside, env=env, capture_output=True,
                              text=True, timeout=120)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    _wait(lambda: not any(_alive(pid) for pid in pids.values()), f"every demo process to stop: {pids}")
