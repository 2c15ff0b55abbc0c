"""Device text and host names from outside never act on a terminal, a log or git (issue 14, item 5).

``devicevault show`` / ``diff`` run as real processes on a pseudo-terminal (escaped) and on a pipe (the
bytes); the index is filled through the real record functions with copies written by the real git and fs
backends. A host name with a newline goes through the real git backend and the real logging set-up.
"""

from __future__ import annotations

import hashlib
import os
import select
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from jobs.controls import escape_controls, one_line

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\x1b[0m \u202etxt.exe\r!"


def test_escape_controls_rule():
    assert escape_controls("plain text\twith tab") == "plain text\twith tab"
    assert escape_controls("a\nb", keep_newlines=True) == "a\nb"
    assert escape_controls("a\nb") == "a\\nb"
    out = escape_controls(HOSTILE, keep_newlines=True)
    assert "\x1b" not in out and "\u202e" not in out and "\r" not in out and "\x07" not in out
    assert "\\x1b]0;pwned\\x07" in out and "\\u202e" in out and "\\r" in out
    assert one_line("r1\nr1: configuration changed") == "r1\\nr1: configuration changed"
    assert escape_controls("bad \udcff byte") == "bad \\xff byte"  # an undecodable byte (surrogateescape)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def test_newline_in_a_host_name_cannot_forge_a_commit_subject(tmp_path, monkeypatch):
    from storage import StoreOptions, device_path
    from storage.git import GitBackend

    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    repo = tmp_path / "repo"
    backend = GitBackend(repo)
    evil = "r1\n\nr9: configuration changed (run forged)\n\x1b[2J"
    backend.store(b"hostname r1\n", device_path("g", evil), StoreOptions(device=evil, run_id="run-1"))
    backend.store(b"hostname r2\n", device_path("g", "r2"), StoreOptions(device="r2", run_id="run-1"))
    subjects = _git(repo, "log", "--format=%s").splitlines()
    assert subjects == ["r2: configuration changed (run run-1)",
                        "r1\\n\\nr9: configuration changed (run forged)\\n\\x1b[2J: configuration changed (run run-1)"]
    bodies = _git(repo, "log", "--format=%b%x00").split("\x00")
    assert all(not b.strip() for b in bodies)
    # the file name is the encoded host name: no newline, no escape, inside its group's directory
    files = _git(repo, "ls-files").splitlines()
    assert len(files) == 2 and all("\n" not in f and "\x1b" not in f and f.startswith("g/") for f in files)


def test_newline_in_a_host_name_is_one_log_line(tmp_path):
    """The real logging set-up (text and JSON): a forged second line never appears."""
    code = (
        "import logging, sys\n"
        "from jobs.settings import Settings\n"
        "from jobs.logs import configure_logging\n"
        "configure_logging(Settings.load(), fmt=sys.argv[1])\n"
        "logging.getLogger('jobs.test').warning('backing up %s', sys.argv[2])\n"
    )
    for fmt in ("text", "json"):
        proc = subprocess.run([sys.executable, "-c", code, fmt, "r1\nCRITICAL forged line \x1b[2J\u202e"],
                              cwd=ROOT, capture_output=True, text=True, env={**os.environ,
                              "DEVICEVAULT_HOME": str(tmp_path), "DEVICEVAULT_INVENTORY": str(tmp_path / "none")})
        assert proc.returncode == 0, proc.stderr
        lines = proc.stderr.splitlines()
        assert len(lines) == 1, proc.stderr
        assert "\x1b" not in proc.stderr and "\u202e" not in proc.stderr
        assert "r1\\nCRITICAL forged line" in lines[0] or "r1\\\\nCRITICAL forged line" in lines[0]


def test_the_commands_own_log_lines_are_one_line_too():
    import logging

    from jobs.logs import OneLine

    record = logging.LogRecord("cli", logging.WARNING, __file__, 1, "device %s failed", ("r1\nforged \x1b[2J",), None)
    assert OneLine().filter(record) and record.getMessage() == "device r1\\nforged \\x1b[2J failed"


# --- show and diff ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hostile_home(tmp_path_factory):
    """An index with two versions of r1 whose configuration carries escapes, copies in git and fs."""
    from jobs.deliver.locations import StorageLayout
    from jobs.settings import Settings
    from jobs.streams.results import DeviceResult, DeviceStatus, StorageResult, StorageStatus
    from storage.base import StoreOptions
    from storage.index.db import connect
    from storage.index.records import apply_device_result, apply_storage_result, create_run, refresh_run
    from storage.paths import device_path

    home = tmp_path_factory.mktemp("hostile")
    env = {"DEVICEVAULT_HOME": str(home), "DEVICEVAULT_INVENTORY": str(home / "inventory"),
           "GIT_CONFIG_GLOBAL": "/dev/null"}
    settings = Settings.load(env={**os.environ, **env})
    layout = StorageLayout.load(settings)
    sessions = connect(settings.database_url)
    when = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
    texts = ["hostname r1\n!\nbanner motd ^hello^\nend\n",
             f"hostname r1\n!\nbanner motd ^{HOSTILE}^\nend\n"]
    for n, text in enumerate(texts, 1):
        run_id, stamp = f"run-{n}", when + timedelta(minutes=n)
        data = text.encode()
        sha = hashlib.sha256(data).hexdigest()
        with sessions.begin() as session:
            create_run(session, run_id, total=1, selector="all", targets=["git", "fs"])
        stored = []
        for target in ("git", "fs"):
            ref = layout.open(target).store(data, device_path("lab", "r1"),
                                            StoreOptions(device="r1", run_id=run_id, timestamp=stamp))
            stored.append(StorageResult(task_id=f"{run_id}:r1:{target}", run_id=run_id, device="r1", backend=target,
                                        status=StorageStatus.STORED, timestamp=stamp, group="lab", sha256=sha,
                                        size=len(data), ref=ref))
        with sessions.begin() as session:
            apply_device_result(session, DeviceResult(
                task_id=f"{run_id}:r1", run_id=run_id, device="r1", status=DeviceStatus.CHANGED, timestamp=stamp,
                group="lab", platform="ios", sha256=sha, size=len(data), targets="git,fs"))
            for s in stored:
                apply_storage_result(session, s)
            refresh_run(session, run_id, now=stamp)
    return env, texts


def _on_a_terminal(env: dict[str, str], *args: str, timeout: float = 60) -> bytes:
    """``devicevault ARGS`` with its standard output on a pseudo-terminal; everything it wrote there."""
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "cli", *args], stdout=slave, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, cwd=ROOT, env={**os.environ, **env})
    os.close(slave)
    out = bytearray()
    while True:
        ready, _, _ = select.select([master], [], [], timeout)
        if not ready:
            proc.kill()
            raise AssertionError(f"devicevault {' '.join(args)}: no output for {timeout}s")
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout) == 0, proc.stderr.read().decode()
    return bytes(out)


def _piped(env: dict[str, str], *args: str) -> bytes:
    proc = subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, cwd=ROOT,
                          env={**os.environ, **env}, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def test_show_escapes_on_a_terminal_and_pipes_bytes(hostile_home):
    env, texts = hostile_home
    shown = _on_a_terminal(env, "show", "r1", "-1")  # -1 = the newest, as the README says
    for bad in (b"\x1b", b"\x07", "\u202e".encode()):
        assert bad not in shown
    assert b"banner motd ^\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mred\\x1b[0m \\u202etxt.exe\\r!^" in shown
    assert b"hostname r1" in shown
    assert _piped(env, "show", "r1", "-1") == texts[1].encode()  # a pipe gets the stored bytes
    assert _piped(env, "show", "r1", "1") == texts[0].encode()
    assert _piped(env, "show", "r1", "-2") == texts[0].encode()


def test_diff_escapes_on_a_terminal_unless_raw(hostile_home):
    env, _ = hostile_home
    shown = _on_a_terminal(env, "diff", "r1", "-2", "-1")
    assert b"\x1b" not in shown and "\u202e".encode() not in shown
    assert b"+banner motd ^\\x1b]0;pwned\\x07" in shown and b"-banner motd ^hello^" in shown
    raw = _on_a_terminal(env, "diff", "r1", "--raw")
    assert b"\x1b]0;pwned\x07" in raw and "\u202e".encode() in raw
    assert b"\x1b]0;pwned\x07" in _piped(env, "diff", "r1")
