"""Build hook for ``pip install .`` (everything else is in pyproject.toml).

A wheel carries DeviceVault's Ansible side as package data: ``ansible.cfg``, the whole ``playbooks/`` tree
(backup.yml, the platform files, the devicevault.network collection) and ``inventories/`` are copied to
``jobs/share/`` in the wheel, laid out as in the checkout so that ansible.cfg's relative paths
(``collections_path = playbooks/collections``, ``inventory = inventories/lab``) still hold.
``jobs.settings.DATA_DIR`` finds them there; a checkout and an editable install use the checkout itself.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
#: what the wheel carries under jobs/share/ (keep in step with MANIFEST.in for an sdist)
DATA = ("ansible.cfg", "playbooks", "inventories")
SHARE = Path("jobs") / "share"


class build_py_with_data(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads the checkout
            return
        target = Path(self.build_lib) / SHARE
        shutil.rmtree(target, ignore_errors=True)  # nothing left over from an older build
        target.mkdir(parents=True)
        for name in DATA:
            source = HERE / name
            if source.is_dir():
                shutil.copytree(source, target / name,
                                ignore=shutil.ignore_patterns("__pycache__", "*.py[co]", ".pytest_cache"))
            else:
                shutil.copy2(source, target / name)


setup(cmdclass={"build_py": build_py_with_data})
