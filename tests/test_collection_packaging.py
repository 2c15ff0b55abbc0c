"""DeviceVault's Ansible collection on its own (issue 13, item 3), by real processes only.

``ansible-galaxy collection build`` makes the tarball from the checkout; ``ansible-galaxy collection install
--offline -p`` puts it into an empty directory outside the checkout (its dependency ``ansible.netcommon`` is
found among the vendor collections of this Python environment, the ``ansible`` package). Every later command
runs from another empty directory with ``ANSIBLE_COLLECTIONS_PATH`` naming only that install and the vendor
collections, no ``ansible.cfg`` and nothing pointing into the checkout: ``ansible-doc`` for every plugin
that ansible-doc knows a type for, and ``ansible-playbook`` on a copy of ``playbooks/backup.yml`` against
lab devices (a vendor platform and DeviceVault's own ``cli`` terminal/cliconf plugins), with
``-e backup_dir=...`` as a network engineer runs it, and once more with a site's own platform directory.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from lab.testing import running_lab

ROOT = Path(__file__).resolve().parent.parent
COLLECTION = ROOT / "playbooks" / "collections" / "ansible_collections" / "devicevault" / "network"
#: the vendor collections (ansible.netcommon, cisco.ios, ...): the ansible package in this environment
VENDOR = Path(sysconfig.get_paths()["purelib"])
BIN = Path(sys.executable).parent
LAB_BASE = "127.0.176.0"
#: every plugin of the collection, by the type ansible-doc files it under. ansible-doc has no type for
#: terminal plugins (ansible-core's list: become, cache, callback, cliconf, connection, ...), so the
#: terminal plugin devicevault.network.cli is checked by loading it in the playbook run (asa) instead.
PLUGINS = [("module", "devicevault.network.collect"), ("module", "devicevault.network.collect_batch"),
           ("module", "devicevault.network.restore"), ("cliconf", "devicevault.network.cli"),
           ("callback", "devicevault.network.devicevault")]


def _env(collections: Path, **extra: str) -> dict[str, str]:
    """No DeviceVault or Ansible settings from this process, no checkout on PATH or PYTHONPATH; Ansible's
    collections: the installed one and the vendor collections only (sys.path is not scanned)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DEVICEVAULT_", "ANSIBLE_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    path = [p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p and not p.startswith(str(ROOT))]
    env.update(PATH=os.pathsep.join([str(BIN)] + path), LC_ALL="C.UTF-8", LANG="C.UTF-8",
               ANSIBLE_COLLECTIONS_PATH=f"{collections}{os.pathsep}{VENDOR}",
               ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false", ANSIBLE_HOST_KEY_CHECKING="false",
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCAL_TEMP=str(collections.parent / "ansible-tmp"),
               ANSIBLE_PERSISTENT_CONTROL_PATH_DIR=str(collections.parent / "pc"),
               ANSIBLE_PERSISTENT_COMMAND_TIMEOUT="20", ANSIBLE_PERSISTENT_CONNECT_TIMEOUT="20")
    env.update(extra)
    return env


def _run(cmd, cwd: Path, env: dict[str, str], timeout: float = 180, ok: bool = True):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if ok:
        assert proc.returncode == 0, (f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
                                      f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the install directory given to ``-p``, an empty working directory outside the checkout)."""
    base = tmp_path_factory.mktemp("collection")
    dist, collections, work = base / "dist", base / "installed", base / "work"
    for d in (dist, collections, work):
        d.mkdir()
    env = _env(collections)
    _run([BIN / "ansible-galaxy", "collection", "build", COLLECTION, "--output-path", dist], cwd=work, env=env)
    tarball, = dist.glob("devicevault-network-*.tar.gz")
    _run([BIN / "ansible-galaxy", "collection", "install", "--offline", "-p", collections, tarball],
         cwd=work, env=env)
    assert not list(work.iterdir()), "the install wrote into the working directory"
    return collections, work


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with running_lab(count=2, base=LAB_BASE, platforms=["ios", "asa"],
                     workdir=tmp_path_factory.mktemp("collection-lab")) as handle:
        yield handle


def test_the_installed_collection_is_complete_and_found_only_there(installed):
    collections, work = installed
    top = collections / "ansible_collections" / "devicevault" / "network"
    manifest = yaml.safe_load((top / "MANIFEST.json").read_text())["collection_info"]
    galaxy = yaml.safe_load((COLLECTION / "galaxy.yml").read_text())
    assert manifest["version"] == galaxy["version"]
    assert manifest["repository"] and "networking" in manifest["tags"] and manifest["license"]
    assert "ansible.netcommon" in manifest["dependencies"]
    for spec in (COLLECTION / "platforms").glob("*.yml"):  # every vendor collection a platform file names
        owner = ".".join(yaml.safe_load(spec.read_text())["network_os"].split(".")[:2])
        assert owner == "devicevault.network" or owner in manifest["dependencies"], (spec.name, owner)
    assert yaml.safe_load((top / "meta" / "runtime.yml").read_text())["requires_ansible"]
    assert (top / "CHANGELOG.md").is_file()
    shipped = {p.stem for p in (top / "platforms").glob("*.yml")}
    assert shipped == {p.stem for p in (COLLECTION / "platforms").glob("*.yml")} and {"ios", "asa"} <= shipped
    listing = _run([BIN / "ansible-galaxy", "collection", "list", "devicevault.network"], cwd=work,
                   env=_env(collections)).stdout
    assert str(collections) in listing and str(ROOT) not in listing


@pytest.mark.parametrize("kind,name", PLUGINS)
def test_ansible_doc_documents_every_plugin(installed, kind, name):
    collections, work = installed
    proc = _run([BIN / "ansible-doc", "-t", kind, "--json", name], cwd=work, env=_env(collections))
    doc = next(iter(yaml.safe_load(proc.stdout).values()))["doc"]
    assert doc["short_description"] and doc["description"]
    assert str(collections) in doc["filename"], doc["filename"]


def _backup(installed, lab, tmp_path, *extra: str):
    """ansible-playbook on a copy of backup.yml from the empty directory; returns (process, backup_dir)."""
    collections, work = installed
    playbook = tmp_path / "backup.yml"
    shutil.copy(ROOT / "playbooks" / "backup.yml", playbook)
    out = tmp_path / "configs"
    out.mkdir()
    proc = _run([BIN / "ansible-playbook", "-i", lab.inventory, playbook, "-e", f"backup_dir={out}", *extra],
                cwd=work, env=_env(collections), timeout=240, ok=False)
    return proc, out


def test_the_installed_collection_backs_up_lab_devices_with_ansible_playbook_alone(installed, lab, tmp_path):
    proc, out = _backup(installed, lab, tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    ios, asa = lab.host("ios"), lab.host("asa")
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{ios}.cfg", f"{asa}.cfg"])
    ios_text = (out / f"{ios}.cfg").read_text()
    assert "Cisco IOS Software" in ios_text and f"hostname {ios}" in ios_text
    # asa: DeviceVault's own cli terminal/cliconf plugins from the install, the commands of its asa.yml
    asa_text = (out / f"{asa}.cfg").read_text()
    assert "Adaptive Security Appliance" in asa_text and f"hostname {asa}" in asa_text


def test_a_site_platform_directory_is_searched_first(installed, lab, tmp_path):
    """devicevault_platforms_dir (an extra variable here) names a directory outside the install: a host whose
    devicevault_platform names a file only there is backed up; a name in neither directory fails that host."""
    site = tmp_path / "site-platforms"
    site.mkdir()
    spec = yaml.safe_load((COLLECTION / "platforms" / "ios.yml").read_text())
    spec["commands"] = [c for c in spec["commands"]
                        if "version" not in (c["command"] if isinstance(c, dict) else c)]
    spec.pop("startup", None)
    (site / "site-ios.yml").write_text(yaml.safe_dump(spec))
    ios = lab.host("ios")
    proc, out = _backup(installed, lab, tmp_path, "--limit", ios, "-e", f"devicevault_platforms_dir={site}",
                        "-e", "devicevault_platform=site-ios")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    text = (out / f"{ios}.cfg").read_text()
    assert f"hostname {ios}" in text and "Cisco IOS Software" not in text   # only the site file's commands
    again = tmp_path / "again"
    again.mkdir()
    proc, out = _backup(installed, lab, again, "--limit", ios, "-e", "devicevault_platform=nosuch")
    assert proc.returncode != 0 and "no platform file nosuch.yml" in proc.stdout
    assert not list(out.iterdir())


def test_awx_files_name_the_collections_the_python_and_system_dependencies(tmp_path):
    """collections/requirements.yml, execution-environment.yml (ansible-builder 3) and bindep.txt hang
    together, and the requirements' entry for DeviceVault's own collection installs: pointed at this
    checkout's git repository (its committed HEAD) instead of the public URL, offline."""
    requirements = yaml.safe_load((ROOT / "collections" / "requirements.yml").read_text())["collections"]
    names = {c["name"] for c in requirements}
    assert {"ansible.netcommon", "cisco.ios", "arista.eos", "junipernetworks.junos", "netbox.netbox"} <= names
    # every network OS named by a built-in platform file comes from a collection of the file (or our own)
    for spec in (COLLECTION / "platforms").glob("*.yml"):
        network_os = yaml.safe_load(spec.read_text())["network_os"]
        assert ".".join(network_os.split(".")[:2]) in names | {"devicevault.network"}, (spec.name, network_os)
    own, = (c for c in requirements if c.get("type") == "git")
    assert own["name"].endswith("#/playbooks/collections/ansible_collections/devicevault/network")

    ee = yaml.safe_load((ROOT / "execution-environment.yml").read_text())
    assert ee["version"] == 3 and ee["images"]["base_image"]["name"]
    deps = ee["dependencies"]
    assert (ROOT / deps["galaxy"]).resolve() == ROOT / "collections" / "requirements.yml"
    assert (ROOT / deps["system"]).is_file() and "git" in (ROOT / deps["system"]).read_text()
    assert any(str(p).startswith("devicevault") for p in deps["python"])
    assert "2.19" in deps["ansible_core"]["package_pip"]

    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    url = own["name"].split("#", 1)[1]
    (tmp_path / "requirements.yml").write_text(yaml.safe_dump({"collections": [
        {"name": f"git+file://{ROOT / '.git'}#{url}", "type": "git", "version": head}]}))
    collections = tmp_path / "installed"
    _run([BIN / "ansible-galaxy", "collection", "install", "--offline", "-r", tmp_path / "requirements.yml",
          "-p", collections], cwd=tmp_path, env=_env(collections))
    top = collections / "ansible_collections" / "devicevault" / "network"
    assert (top / "platforms" / "ios.yml").is_file() and (top / "plugins" / "cliconf" / "cli.py").is_file()


def test_ansible_lint_production_profile_finds_nothing():
    """ansible-lint (production profile, offline) on playbooks/ (backup.yml and the collection) and on the
    AWX files: 0 failures, 0 warnings."""
    lint = BIN / "ansible-lint"
    if not lint.exists():
        pytest.skip("ansible-lint is not installed (pip install -e .[test])")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8", NO_COLOR="1")
    proc = subprocess.run([lint, "--offline", "--profile", "production", "--nocolor", "playbooks/",
                           "collections/requirements.yml", "execution-environment.yml"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    assert "0 failure(s), 0 warning(s)" in proc.stdout + proc.stderr


#: the ansible-test sanity tests that read the collection's documentation, imports and metadata (the whole
#: set, pylint and pep8 included, passes too: about a minute; these are the ones a plugin change breaks)
SANITY = ["validate-modules", "import", "ansible-doc", "action-plugin-docs", "runtime-metadata", "yamllint"]


def test_ansible_test_sanity_offline_finds_nothing(tmp_path):
    """``ansible-test sanity`` on a copy of the collection in an ``ansible_collections`` tree of its own, its
    dependencies (ansible.netcommon and what it needs, ansible.utils) beside it as an install puts them,
    offline and with this Python (no container, no virtual environment to download)."""
    test = BIN / "ansible-test"
    if not test.exists():
        pytest.skip("ansible-test is not installed (ansible-core)")
    top = tmp_path / "ansible_collections"
    shutil.copytree(COLLECTION, top / "devicevault" / "network",
                    ignore=shutil.ignore_patterns("__pycache__", "*.tar.gz", "tests"))
    (top / "ansible").mkdir()
    for name in ("netcommon", "utils"):
        (top / "ansible" / name).symlink_to(VENDOR / "ansible_collections" / "ansible" / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "DEVICEVAULT_"))}
    env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8", PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    tests = [arg for name in SANITY for arg in ("--test", name)]
    proc = _run([test, "sanity", "--python", f"{sys.version_info.major}.{sys.version_info.minor}", "--color", "no",
                 *tests], cwd=top / "devicevault" / "network", env=env, timeout=600, ok=False)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    assert "ERROR" not in proc.stdout + proc.stderr
