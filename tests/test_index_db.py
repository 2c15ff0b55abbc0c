"""Opening the index: processes that start together must not trip over each other's first migration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_six_processes_creating_the_same_new_index_all_succeed(index_url):
    url = index_url  # SQLite and PostgreSQL (tests/conftest.py)
    code = f"from storage.index.db import connect; connect({url!r})"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE) for _ in range(6)]
    outcomes = [(p.wait(60), p.stderr.read().decode()[-300:]) for p in procs]
    assert all(code == 0 for code, _ in outcomes), outcomes
    from storage.index.db import connect
    from storage.index.models import Device

    with connect(url)() as session:
        assert session.query(Device).count() == 0
