"""Git backend specifics: commits, messages, authors, concurrency, repo setup."""

from __future__ import annotations

import multiprocessing
import sys
import subprocess
import time
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


# --- the write path: one git process per store_many (storage/git.py's module doc) ---------------------------
@pytest.fixture()
def git_calls(tmp_path, monkeypatch):
    """Counts the git processes started from here on: a real ``git`` wrapper first on PATH (and as git's
    exec-path, so git's own children count too) that logs each call and execs the real git."""
    import shutil

    real = shutil.which("git")
    exec_path = Path(subprocess.run([real, "--exec-path"], capture_output=True, text=True, check=True).stdout.strip())
    bindir, logdir = tmp_path / "gitbin", tmp_path / "gitlog"
    bindir.mkdir()
    logdir.mkdir()
    for helper in exec_path.iterdir():
        if helper.name != "git":
            (bindir / helper.name).symlink_to(helper)
    (bindir / "git").write_text(
        f'#!/bin/sh\nf="{logdir}/$$"\nwhile [ -e "$f" ]; do f="$f+"; done\necho "$*" > "$f"\n'
        f'GIT_EXEC_PATH="{bindir}"; export GIT_EXEC_PATH\nexec "{exec_path}/git" "$@"\n'
    )
    (bindir / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{__import__('os').environ['PATH']}")

    def take() -> list[str]:
        calls = [p.read_text().strip() for p in sorted(logdir.iterdir())]
        for p in logdir.iterdir():
            p.unlink()
        return calls

    return take


def _clean(repo: Path) -> None:
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    git(repo, "diff", "--cached", "--quiet")  # index == branch tip
    git(repo, "fsck", "--strict", "--no-progress")


def test_store_many_is_one_git_process(tmp_path, git_calls):
    repo = tmp_path / "repo"
    b = GitBackend(repo)
    git_calls()  # git init
    items = [(f"cfg {i}\n".encode(), f"site_{i % 3}/r{i}", StoreOptions(device=f"r{i}", run_id="1")) for i in range(30)]
    refs = b.store_many(items)
    calls = git_calls()
    assert len(calls) == 1 and "fast-import" in calls[0], calls
    assert len(log(repo)) == 30 and len(set(refs)) == 30
    _clean(repo)
    changed = [(c + b"more\n", p, StoreOptions(device=o.device, run_id="2")) for c, p, o in items]
    git_calls()
    refs2 = b.store_many(changed)
    assert len(git_calls()) == 1
    for ref, (content, _p, _o) in zip(refs2, changed):
        assert b.read(ref) == content
    _clean(repo)
    # the same versions again (a retried job): no commit, the same refs, no git process while cached
    git_calls()
    assert b.store_many(changed) == refs2
    assert git_calls() == []
    # a fresh backend (a new storage job) asks fast-import what the tip holds, and git log for the refs
    git_calls()
    assert GitBackend(repo).store_many(changed) == refs2
    calls = git_calls()
    assert len(calls) == 2 and "fast-import" in calls[0] and " log " in calls[1], calls
    assert len(log(repo)) == 60
    _clean(repo)


def test_store_many_same_path_several_times(tmp_path):
    repo = tmp_path / "repo"
    b = GitBackend(repo)
    refs = b.store_many([
        (b"a\n", "g/r1", None), (b"a\n", "g/r1", None),  # the second is the same version: no commit
        (b"b\n", "g/r1", None), (b"a\n", "g/r1", None),  # back to a: a change again
    ])
    assert refs[0] == refs[1] and len(set(refs)) == 3
    assert [b.read(r) for r in refs] == [b"a\n", b"a\n", b"b\n", b"a\n"]
    assert len(log(repo)) == 3
    assert (repo / "g" / "r1").read_bytes() == b"a\n"
    _clean(repo)


def test_commit_metadata_like_git_commit(tmp_path):
    repo = tmp_path / "repo"
    ts = datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)
    b = GitBackend(repo, author_name="Vault", author_email="vault@example.net")
    b.store_many([
        (b"x\n", "g/r1", StoreOptions(author="Jane Ops <jane@example.net>", timestamp=ts,
                                       message="\n\nr1: NTP added   \n\n\n\nby change 7  \n\n")),
        (b"y\n", "g/r2", StoreOptions(author="netops", device="r2", run_id="5")),
    ])
    out = [c.strip("\n") for c in git(repo, "log", "--format=%an|%ae|%at|%cn|%ce|%B%x00").split("\x00")]
    assert out[0].split("|")[:2] + out[0].split("|")[3:] == [
        "netops", "vault@example.net", "Vault", "vault@example.net", "r2: configuration changed (run 5)"]
    assert out[1] == f"Jane Ops|jane@example.net|{int(ts.timestamp())}|Vault|vault@example.net|r1: NTP added\n\nby change 7"


def test_unusual_paths_in_one_batch(tmp_path):
    repo = tmp_path / "repo"
    b = GitBackend(repo)
    paths = ['g/a "quoted" name', "g/ünïcødé", "g/sp ace", "g/%2E%2E%2F..", "\"g/leading-quote"]
    refs = b.store_many([(f"{p}\n".encode(), p, None) for p in paths])
    for p, ref in zip(paths, refs):
        assert b.read(ref) == f"{p}\n".encode()
        assert (repo / p).read_bytes() == f"{p}\n".encode()
    _clean(repo)


def test_index_git_cannot_be_shared_with_is_rewritten_by_git(tmp_path):
    """A v4 index (feature.manyFiles) is left to git read-tree; the result is the same clean repository."""
    repo = tmp_path / "repo"
    b = GitBackend(repo)
    b.store_many([(b"1\n", "g/r1", None), (b"2\n", "g/r2", None)])
    git(repo, "update-index", "--index-version", "4")
    b.store_many([(b"1b\n", "g/r1", None), (b"3\n", "g/r3", None)])
    assert (repo / "g" / "r1").read_bytes() == b"1b\n"
    _clean(repo)


def test_git_commands_after_a_batch_see_the_new_files(tmp_path):
    """The index written in Python drops git's cache-tree, so a later git commit (delete) records every file."""
    repo = tmp_path / "repo"
    b = GitBackend(repo)
    b.store(b"old\n", "g/r0")
    git(repo, "status")  # lets git refresh and rewrite the index
    b.delete(b.store(b"gone\n", "g/gone"))  # a git commit: builds a cache-tree
    refs = b.store_many([(b"new\n", "g/r0", None), (b"x\n", "h/r1", None)])
    b.delete(b.store(b"tmp\n", "g/tmp"))
    assert git(repo, "show", "main:g/r0") == "new\n" and git(repo, "show", "main:h/r1") == "x\n"
    assert b.read(refs[0]) == b"new\n"
    assert sorted(git(repo, "ls-tree", "-r", "--name-only", "main").split()) == ["g/r0", "h/r1"]
    _clean(repo)


def test_interrupted_write_is_repaired_by_the_next(tmp_path):
    """The branch moved but the work tree and index did not (a crash after fast-import): the next write
    brings them up to date first, then stores."""
    from storage.git import SYNC_MARK

    repo = tmp_path / "repo"
    b = GitBackend(repo)
    b.store(b"one\n", "g/r1")
    blob = subprocess.run(["git", "hash-object", "-w", "--stdin"], cwd=repo, input="two\n", capture_output=True,
                          text=True, check=True).stdout.strip()
    tree = subprocess.run(["git", "mktree"], cwd=repo, input=f"100644 blob {blob}\tr1\n", capture_output=True,
                          text=True, check=True).stdout.strip()
    top = subprocess.run(["git", "mktree"], cwd=repo, input=f"040000 tree {tree}\tg\n", capture_output=True,
                         text=True, check=True).stdout.strip()
    commit = git(repo, "-c", "user.name=x", "-c", "user.email=x@x", "commit-tree", top, "-p", "main", "-m", "two").strip()
    git(repo, "update-ref", "refs/heads/main", commit)
    (repo / ".git" / SYNC_MARK).write_text("")
    assert b.store(b"two\n", "g/r1") == f"main:g/r1@{commit}"  # the same version: no commit
    assert not (repo / ".git" / SYNC_MARK).exists()
    assert (repo / "g" / "r1").read_bytes() == b"two\n"
    _clean(repo)


# --- maintenance: packing (storage/git.py's module doc, "Maintenance") ---------------------------------------
def _objects(repo: Path) -> dict[str, int]:
    out = git(repo, "count-objects", "-v")
    return {k: int(v) for k, v in (line.split(": ") for line in out.splitlines())}


def test_maintain_packs_loose_objects_and_small_packs(tmp_path):
    repo = tmp_path / "repo"
    b = GitBackend(repo)
    refs: list[tuple[str, bytes]] = []
    base = "".join(f"interface Gi0/{i}\n description port {i}\n" for i in range(50))
    for batch in range(40):  # 200 single-device commits, 40 batches: 40 small packs (below PACK_LIMIT)
        items = [((base + f"! rev {batch}\n").encode(), f"site/r{batch % 4 * 5 + i}",
                  StoreOptions(device=f"r{i}", run_id=str(batch))) for i in range(5)]
        refs += zip(b.store_many(items), (c for c, _p, _o in items))
    b.delete(refs[-1][0])  # git commit: loose objects
    refs.pop()
    refs.append((b.store(b"back\n", "site/r19"), b"back\n"))
    assert int(git(repo, "rev-list", "--count", "main")) == 202
    before = _objects(repo)
    assert before["count"] > 0 and before["packs"] >= 40, before

    result = b.maintain()
    after = _objects(repo)
    assert result["ran"] is True and result["skipped"] == ""
    assert (result["loose_before"], result["packs_before"]) == (before["count"], before["packs"])
    assert after["count"] == 0 and after["packs"] <= 2, after
    assert (result["loose_after"], result["packs_after"]) == (0, after["packs"])
    assert after["in-pack"] >= before["in-pack"] + before["count"]
    print(f"\nbefore maintain: {before}\nafter maintain: {after}")
    git(repo, "fsck", "--strict", "--no-progress")
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    for ref, content in refs:
        assert b.read(ref) == content
    # nothing new: no git process, nothing changes
    again = b.maintain()
    assert again["ran"] is (after["packs"] > 1) and _objects(repo)["count"] == 0
    # stores go on as before
    assert b.read(b.store(b"after\n", "site/r0")) == b"after\n"
    _clean(repo)


_HOLD_LOCK = """
import sys
from storage._lock import file_lock
with file_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_maintain_never_runs_while_a_store_holds_the_lock(tmp_path):
    from storage.git import LOCK_NAME

    repo = tmp_path / "repo"
    b = GitBackend(repo)
    for i in range(3):
        b.store(f"v{i}\n".encode(), f"g/r{i}")
    before = _objects(repo)
    assert before["packs"] == 3
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(repo / ".git" / LOCK_NAME)],
                              cwd=Path(__file__).resolve().parents[1], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline() == "held\n"  # the other process holds the store lock now
        assert b.maintain() == {"ran": False, "skipped": "busy"}
        assert _objects(repo) == before
    finally:
        holder.stdin.close()
        holder.wait()
    assert holder.returncode == 0
    result = b.maintain()
    assert result["ran"] is True and _objects(repo)["packs"] == 1
    # a thread of this process holding the backend's lock counts too
    b.store(b"more\n", "g/r0")
    with b._tlock:
        assert b.maintain()["skipped"] == "busy"


def _store_versions(b: GitBackend, batches: int, devices: int = 5) -> list[tuple[str, bytes]]:
    """``batches`` batches of one new version of each of ``devices`` devices (one pack each); (ref, content)."""
    refs: list[tuple[str, bytes]] = []
    base = "".join(f"interface Gi0/{i}\n description port {i}\n" for i in range(40))
    for batch in range(batches):
        items = [((f"hostname r{i}\n" + base + f"! rev {batch}\n").encode(), f"site/r{i}", None) for i in range(devices)]
        refs += zip(b.store_many(items), (c for c, _p, _o in items))
    return refs


def _full_repack_mark(repo: Path) -> str:
    from storage.git import FULL_REPACK_MARK

    return (repo / ".git" / FULL_REPACK_MARK).read_text()


def test_due_full_repack_leaves_one_pack_and_a_commit_graph_with_changed_paths(tmp_path):
    repo = tmp_path / "repo"
    b = GitBackend(repo)
    refs = _store_versions(b, 12)
    b.delete(refs[-1][0])  # git commit: loose objects
    refs.pop()
    assert _objects(repo)["packs"] == 12 and _objects(repo)["count"] > 0
    assert b.last_full_repack() == (None, "")  # never: due

    result = b.maintain()
    assert result["ran"] is True and result["full_repack"] is True and result["skipped"] == ""
    assert (result["loose_after"], result["packs_after"]) == (0, 1) and result["seconds"] >= 0
    after = _objects(repo)
    assert (after["count"], after["packs"]) == (0, 1)
    when, pack = b.last_full_repack()
    assert abs(when - time.time()) < 60
    assert [pack] == [p.name for p in (repo / ".git" / "objects" / "pack").glob("*.pack")]
    # the commit-graph: every commit, changed-path Bloom filters, verified by git
    git(repo, "commit-graph", "verify")
    chain = repo / ".git" / "objects" / "info" / "commit-graphs"
    layers = (chain / "commit-graph-chain").read_text().split()
    assert len(layers) == 1
    graph = (chain / f"graph-{layers[0]}.graph").read_bytes()
    assert b"BIDX" in graph[:200] and b"BDAT" in graph[:200]  # the Bloom filter chunks in the chunk table
    git(repo, "fsck", "--strict", "--no-progress")
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    for ref, content in refs:
        assert b.read(ref) == content
    assert b.latest("site/r0") == [ref for ref, _c in refs if ref.startswith("main:site/r0@")][-1]
    # the next pass after new stores is a geometric one that adds a commit-graph layer, not a full repack
    mark = _full_repack_mark(repo)
    refs += _store_versions(b, 3)
    result = b.maintain()
    assert result["ran"] is True and result["full_repack"] is False
    assert _full_repack_mark(repo) == mark
    assert (chain / "commit-graph-chain").read_text().split() != layers  # the new commits are in it
    git(repo, "commit-graph", "verify")
    assert len(git(repo, "log", "--format=%H", "--", "site/r1").split()) == 15  # 12 + 3 versions
    git(repo, "fsck", "--strict", "--no-progress")
    for ref, content in refs:
        assert b.read(ref) == content
    _clean(repo)


def test_maintain_does_no_full_repack_until_the_interval_has_passed(tmp_path):
    from storage.git import FULL_REPACK_INTERVAL, FULL_REPACK_MARK

    repo = tmp_path / "repo"
    assert GitBackend(repo).full_repack_interval == FULL_REPACK_INTERVAL == 24 * 3600
    b = GitBackend(repo, full_repack_interval="3600")  # as a storage file gives it
    _store_versions(b, 4)
    assert b.maintain()["full_repack"] is True
    mark = _full_repack_mark(repo)
    _store_versions(b, 4)
    result = b.maintain()
    assert result["ran"] is True and result["full_repack"] is False and result["packs_after"] == 2
    assert _full_repack_mark(repo) == mark  # recorded time and pack unchanged
    # another process (a second backend on the same repository) agrees: not due
    other = GitBackend(repo, full_repack_interval=3600)
    assert other.last_full_repack() == b.last_full_repack()
    _store_versions(other, 1)
    assert other.maintain()["full_repack"] is False and _full_repack_mark(repo) == mark
    # an hour later (the recorded time moved back): due, for every process
    when, pack = other.last_full_repack()
    (repo / ".git" / FULL_REPACK_MARK).write_text(f"{when - 3601:.0f} {pack}\n")
    result = b.maintain()
    assert result["full_repack"] is True and result["packs_after"] == 1
    assert _full_repack_mark(repo) != mark and b.last_full_repack()[0] >= when
    # due again but nothing changed since (its one pack is the full repack's): no git process
    when, pack = b.last_full_repack()
    (repo / ".git" / FULL_REPACK_MARK).write_text(f"{when - 7200:.0f} {pack}\n")
    assert b.maintain()["skipped"] == "nothing to do"
    # asked for explicitly: runs now
    assert b.maintain(full=True)["full_repack"] is True
    git(repo, "commit-graph", "verify")
    git(repo, "fsck", "--strict", "--no-progress")
    with pytest.raises(ValueError):
        GitBackend(repo, full_repack_interval="daily")
    with pytest.raises(ValueError):
        GitBackend(repo, full_repack_interval=-1)


def test_due_full_repack_is_skipped_while_a_store_holds_the_lock(tmp_path):
    from storage.git import LOCK_NAME

    repo = tmp_path / "repo"
    b = GitBackend(repo)
    _store_versions(b, 3)
    before = _objects(repo)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(repo / ".git" / LOCK_NAME)],
                              cwd=Path(__file__).resolve().parents[1], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        assert b.maintain(full=True) == {"ran": False, "skipped": "busy"}
        assert b.maintain() == {"ran": False, "skipped": "busy"}
        assert _objects(repo) == before and b.last_full_repack() == (None, "")
        assert not (repo / ".git" / "objects" / "info" / "commit-graphs").exists()
    finally:
        holder.stdin.close()
        holder.wait()
    assert b.maintain()["full_repack"] is True and b.last_full_repack()[0] is not None


def test_maintenance_pass_maintains_every_target_that_can(tmp_path):
    from jobs.ops.maintenance import maintain_storage
    from storage.codec import Codec
    from storage.encoded import EncodedBackend
    from storage.fs import FilesystemBackend

    git_backend = GitBackend(tmp_path / "repo")
    for i in range(3):
        git_backend.store(f"v{i}\n".encode(), f"g/r{i}")

    class Layout:
        backends = {"git": EncodedBackend(git_backend, Codec()), "fs": FilesystemBackend(tmp_path / "fs")}

        def all_targets(self):
            return list(self.backends)

        def open(self, name):
            return self.backends[name]

    results, errors = maintain_storage(Layout())
    assert errors == [] and list(results) == ["git"] and results["git"]["ran"] is True
    assert _objects(tmp_path / "repo")["packs"] == 1
