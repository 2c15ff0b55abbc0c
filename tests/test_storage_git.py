"""Git backend specifics: commits, messages, authors, concurrency, repo setup."""

from __future__ import annotations

import multiprocessing
import sys
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from storage import StorageError, StoreOptions, device_path
from storage.git import GitBackend


@pytest.fixture(autouse=True)
def no_global_git_config(monkeypatch, tmp_path):
    """CI has no user.name/user.email: the backend must not need them."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(var, raising=False)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def log(repo: Path) -> list[str]:
    return git(repo, "log", "--format=%an <%ae>|%s").splitlines()


def test_one_commit_per_change_with_device_and_run(tmp_path):
    repo = tmp_path / "repo"
    b = GitBackend(repo)
    b.store(b"hostname ams-r1\n", "site_ams/ams-r1", StoreOptions(device="ams-r1", run_id="run-17"))
    b.store(b"hostname ams-r2\n", "site_ams/ams-r2", StoreOptions(device="ams-r2", run_id="run-17"))
    b.store(
        b"hostname ams-r1\nntp server 1.1.1.1\n",
        "site_ams/ams-r1",
        StoreOptions(message="ams-r1: NTP added", author="Jane Ops <jane@example.net>"),
    )
    assert log(repo) == [
        "Jane Ops <jane@example.net>|ams-r1: NTP added",
        "DeviceVault <devicevault@localhost>|ams-r2: configuration changed (run run-17)",
        "DeviceVault <devicevault@localhost>|ams-r1: configuration changed (run run-17)",
    ]
    # each commit touches exactly one device file
    for sha in git(repo, "rev-list", "main").split():
        assert len(git(repo, "show", "--name-only", "--format=", sha).split()) == 1
    assert (repo / "site_ams" / "ams-r1").read_bytes() == b"hostname ams-r1\nntp server 1.1.1.1\n"
    assert git(repo, "status", "--porcelain") == ""


def test_no_commit_for_unchanged_content(tmp_path):
    repo = tmp_path / "repo"
    b = GitBackend(repo)
    ref = b.store(b"cfg\n", "g/r1", StoreOptions(device="r1", run_id="1"))
    for run in range(2, 5):
        assert b.store(b"cfg\n", "g/r1", StoreOptions(device="r1", run_id=str(run))) == ref
    assert len(log(repo)) == 1
    # a fresh backend on the same repo (empty cache) still finds the same ref
    assert GitBackend(repo).store(b"cfg\n", "g/r1") == ref


def test_ref_format_and_read_from_history(tmp_path):
    repo = tmp_path / "repo"
    b = GitBackend(repo, branch="configs")
    r1 = b.store(b"one\n", "g/r1")
    r2 = b.store(b"two\n", "g/r1")
    branch, rest = r1.split(":", 1)
    path, sha = rest.rsplit("@", 1)
    assert (branch, path, len(sha)) == ("configs", "g/r1", 40)
    assert git(repo, "show", f"{sha}:g/r1") == "one\n"
    assert b.read(r1) == b"one\n" and b.read(r2) == b"two\n"
    assert git(repo, "symbolic-ref", "HEAD").strip() == "refs/heads/configs"


def test_author_date_from_options(tmp_path):
    repo = tmp_path / "repo"
    ts = datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)
    GitBackend(repo).store(b"x", "g/r1", StoreOptions(timestamp=ts))
    assert git(repo, "log", "-1", "--format=%at").strip() == str(int(ts.timestamp()))


def test_store_many_one_commit_per_changed_device(tmp_path):
    repo = tmp_path / "repo"
    b = GitBackend(repo)
    b.store(b"same\n", "g/r0")
    items = [(b"same\n", "g/r0", StoreOptions(device="r0", run_id="9"))]
    items += [(f"cfg {i}\n".encode(), f"g/r{i}", StoreOptions(device=f"r{i}", run_id="9")) for i in range(1, 51)]
    refs = b.store_many(items)
    assert len(set(refs)) == 51
    messages = log(repo)
    assert len(messages) == 51  # 1 initial + 50 changed, none for r0
    assert f"DeviceVault <devicevault@localhost>|r50: configuration changed (run 9)" == messages[0]
    assert b.store_many(items) == refs
    assert len(log(repo)) == 51


def test_existing_empty_directory_becomes_repo(tmp_path):
    repo = tmp_path / "empty"
    repo.mkdir()
    GitBackend(repo).store(b"x", "g/r1")
    assert len(log(repo)) == 1


def test_non_repo_non_empty_directory_refused(tmp_path):
    d = tmp_path / "stuff"
    d.mkdir()
    (d / "precious.txt").write_text("keep me")
    with pytest.raises(StorageError) as exc:
        GitBackend(d)
    assert str(d) in str(exc.value)


def test_wrong_branch_refused(tmp_path):
    repo = tmp_path / "repo"
    GitBackend(repo, branch="main").store(b"x", "g/r1")
    with pytest.raises(StorageError) as exc:
        GitBackend(repo, branch="other")
    assert "other" in str(exc.value)


def test_git_dir_paths_refused(tmp_path):
    b = GitBackend(tmp_path / "repo")
    with pytest.raises(ValueError):
        b.store(b"evil", ".git/hooks/post-commit")
    with pytest.raises(ValueError):
        b.store(b"evil", "a/.GIT/config")


def test_untrusted_device_names_in_git(tmp_path):
    repo = tmp_path / "repo"
    b = GitBackend(repo)
    ref = b.store(b"x\n", device_path("../..", "../../etc/passwd"))
    assert b.read(ref) == b"x\n"
    tracked = git(repo, "ls-files").split("\n")
    assert tracked[0] == "%2E%2E%2F../%2E%2E%2F..%2Fetc%2Fpasswd"


def _worker(repo: str, worker: int, count: int) -> list[str]:
    backend = GitBackend(repo)
    refs = []
    for i in range(count):
        # own devices plus one shared device every process writes
        refs.append(backend.store(f"w{worker} d{i}\n".encode(), f"w{worker}/d{i}", StoreOptions(device=f"w{worker}-d{i}")))
        refs.append(backend.store(f"shared from w{worker} #{i}\n".encode(), "shared/core", StoreOptions(device="core")))
    batch = [(f"batch w{worker} {i}\n".encode(), f"batch/w{worker}-{i}", None) for i in range(count)]
    refs += backend.store_many(batch)
    backend.close()
    return refs


def test_two_processes_lose_nothing(tmp_path, monkeypatch):
    import types

    repo = tmp_path / "repo"
    GitBackend(repo)  # create it first
    count = 15
    # "spawn" re-runs __main__ in the children; after a Streamlit AppTest in the same pytest worker that is
    # the portal's app.py, so the children would die at start and the pool would respawn them forever
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.starmap(_worker, [(str(repo), 0, count), (str(repo), 1, count)])
    b = GitBackend(repo)
    for worker, refs in enumerate(results):
        for i in range(count):
            assert b.read(refs[2 * i]) == f"w{worker} d{i}\n".encode()
            assert b.read(refs[2 * i + 1]) == f"shared from w{worker} #{i}\n".encode()
        for i, ref in enumerate(refs[2 * count :]):
            assert b.read(ref) == f"batch w{worker} {i}\n".encode()
    # every store changed something: 2 workers x (count own + count shared + count batch)
    assert int(git(repo, "rev-list", "--count", "main")) == 2 * 3 * count
    assert git(repo, "status", "--porcelain") == ""
    git(repo, "fsck", "--strict")
    assert len(git(repo, "ls-files").split()) == 2 * count * 2 + 1
