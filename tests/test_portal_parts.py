"""The portal's parts without Streamlit: the users file and ``devicevault users``, diffs, line counts,
search and the content cache."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from portal import content
from portal.users import UsersError, UsersFile

ROOT = Path(__file__).resolve().parent.parent


# --- users ------------------------------------------------------------------------------------------------
def test_users_file_hashes_passwords_and_checks_them(tmp_path):
    users = UsersFile(tmp_path / "users.yml")
    users.add("alice", "admin", "correct horse", rounds=4)
    text = (tmp_path / "users.yml").read_text()
    assert "correct horse" not in text and "$2b$04$" in text
    assert stat.S_IMODE((tmp_path / "users.yml").stat().st_mode) == 0o600
    assert users.authenticate("alice", "correct horse").role == "admin"
    assert users.authenticate("alice", "wrong horse") is None
    assert users.authenticate("nobody", "correct horse") is None
    assert users.authenticate("alice", "x" * 100) is None


def test_users_roles_and_rules(tmp_path):
    users = UsersFile(tmp_path / "users.yml")
    users.add("alice", "admin", "password-1", rounds=4)
    users.add("victor", "viewer", "password-2", rounds=4)
    viewer, admin = users.get("victor"), users.get("alice")
    assert not viewer.can_trigger and not viewer.is_admin and viewer.can("viewer")
    assert admin.can_trigger and admin.is_admin
    with pytest.raises(UsersError, match="exists already"):
        users.add("victor", "operator", "password-3", rounds=4)
    users.add("victor", "operator", "password-3", replace=True, rounds=4)
    assert users.get("victor").can_trigger and users.authenticate("victor", "password-3")
    with pytest.raises(UsersError, match="last admin"):
        users.remove("alice")
    with pytest.raises(UsersError, match="last admin"):
        users.set_role("alice", "viewer")
    for bad in (("", "viewer", "password-1"), ("a b", "viewer", "password-1"), ("bob", "root", "password-1"),
                ("bob", "viewer", "short"), ("bob", "viewer", "é" * 40)):
        with pytest.raises(UsersError):
            users.add(*bad, rounds=4)
    (tmp_path / "users.yml").write_text("users: [1, 2]\n")
    with pytest.raises(UsersError, match="must map user names"):
        users.users()


def test_users_command(tmp_path):
    env = {**os.environ, "DEVICEVAULT_HOME": str(tmp_path), "LC_ALL": "C.UTF-8"}
    env.pop("DEVICEVAULT_USERS_FILE", None)

    def dv(*args, stdin=""):
        return subprocess.run([sys.executable, "-m", "cli", "users", *args], input=stdin, text=True,
                              capture_output=True, env=env, cwd=ROOT, timeout=60)

    added = dv("add", "alice", "--role", "admin", "--password-stdin", stdin="alice-password\n")
    assert added.returncode == 0, added.stderr
    assert "alice (admin)" in added.stdout and "alice-password" not in added.stdout + added.stderr
    again = dv("add", "alice", "--role", "viewer", "--password-stdin", stdin="another-password\n")
    assert again.returncode != 0 and "exists already" in again.stderr and "Traceback" not in again.stderr
    UsersFile(tmp_path / "users.yml").add("bob", "viewer", "bob-password", rounds=4)
    listed = dv("list", "--json")
    assert listed.returncode == 0 and "$2b$" not in listed.stdout
    import json

    assert json.loads(listed.stdout) == [{"name": "alice", "role": "admin"}, {"name": "bob", "role": "viewer"}]
    removed = dv("remove", "alice")
    assert removed.returncode != 0 and "last admin" in removed.stderr
    assert UsersFile(tmp_path / "users.yml").authenticate("alice", "alice-password").role == "admin"


def test_portal_command_line():
    from cli.portal import streamlit_command

    args = streamlit_command(8600, "127.0.0.1")
    assert args[1:4] == ["-m", "streamlit", "run"] and args[4].endswith("portal/asgi.py")
    flags = dict(zip(args[5::2], args[6::2]))
    assert flags == {"--server.port": "8600", "--server.headless": "true", "--browser.gatherUsageStats": "false",
                     "--server.fileWatcherType": "none", "--client.showErrorDetails": "none",
                     "--client.toolbarMode": "minimal", "--server.address": "127.0.0.1"}


# --- content ----------------------------------------------------------------------------------------------
OLD = "a\nb\nc\nd\ne\nf\ng\nh\n"
NEW = "a\nB\nc\nd\ne\nf\ng\nh\ni\n"


def test_line_stats_and_unified_diff():
    assert content.line_stats(OLD, NEW) == (2, 1)
    assert content.line_stats(OLD, OLD) == (0, 0)
    patch = content.unified_diff(OLD, NEW, "x v1", "x v2", context=1)
    assert patch.splitlines()[:2] == ["--- x v1", "+++ x v2"]
    assert "-b" in patch.splitlines() and "+B" in patch.splitlines() and "+i" in patch.splitlines()


def test_side_by_side_pairs_lines_and_elides_unchanged_ones():
    rows = content.side_by_side(OLD, NEW, context=1)
    assert [(r.old_no, r.old, r.new_no, r.new, r.change) for r in rows] == [
        (1, "a", 1, "a", ""), (2, "b", 2, "B", "changed"), (3, "c", 3, "c", ""),
        (None, "…", None, "…", "..."),
        (8, "h", 8, "h", ""), (None, "", 9, "i", "added"),
    ]
    assert len(content.side_by_side(OLD, NEW, context=None)) == 9


class _Backend:
    def __init__(self, data: dict[str, bytes]):
        self.data, self.reads = data, 0

    def read(self, ref):
        from storage.errors import RefNotFound

        self.reads += 1
        if ref not in self.data:
            raise RefNotFound(f"no version {ref!r}")
        return self.data[ref]


def _target(device: str, text: str, ref: str, number: int = 1):
    data = text.encode()
    return content.Target(device, number, hashlib.sha256(data).hexdigest(), None, (("fs", ref, "stored"),)), data


def test_search_reads_once_per_sha_and_reports_lines_context_and_unreadable():
    t1, d1 = _target("r1", "hostname r1\nip route 10.0.0.0 255.0.0.0 null0\nend\n", "r1/1")
    t2, d2 = _target("r2", "hostname r2\nend\n", "r2/1")
    t3, _ = _target("r3", "gone\n", "r3/1")
    backend = _Backend({"r1/1": d1, "r2/1": d2})
    cache = content.CACHE
    cache.clear()
    pattern = content.compile_pattern("HOSTNAME", regex=False, case_sensitive=False)
    result = content.search([t1, t2, t3], pattern, lambda _name: backend, context=1)
    assert [(r["device"], r["line"], r["text"]) for r in result.rows] == [("r1", 1, "hostname r1"), ("r2", 1, "hostname r2")]
    assert result.rows[0]["context"].splitlines() == ["    1> hostname r1", "    2  ip route 10.0.0.0 255.0.0.0 null0"]
    assert result.searched == 2 and len(result.unreadable) == 1 and result.unreadable[0].startswith("r3 v1")
    reads = backend.reads
    content.search([t1, t2], pattern, lambda _name: backend)
    assert backend.reads == reads  # cached by sha256
    capped = content.search([t1, t2], pattern, lambda _name: backend, max_results=1)
    assert len(capped.rows) == 1 and "1 matching lines" in capped.truncated
    regex = content.compile_pattern(r"^ip route 10\.", regex=True, case_sensitive=True)
    assert [r["device"] for r in content.search([t1, t2], regex, lambda _name: backend).rows] == ["r1"]
    with pytest.raises(content.SearchError, match="invalid regular expression"):
        content.compile_pattern("ip route (", regex=True, case_sensitive=False)
    with pytest.raises(content.SearchError):
        content.compile_pattern("", regex=False, case_sensitive=False)


def test_cache_is_bounded():
    cache = content.ContentCache(max_bytes=10)
    cache.put("a", b"12345")
    cache.put("b", b"12345")
    assert cache.get("a") == b"12345"  # now the most recent
    cache.put("c", b"123")
    assert cache.get("b") is None and cache.get("a") == b"12345" and cache.get("c") == b"123"


def test_session_cookie_parts(tmp_path, monkeypatch):
    """portal.sessions: the secret is made once (0600), signatures hold only for their id, a grant is good
    once, an idle or ended session is gone."""
    from portal import sessions

    key = sessions.secret_key(tmp_path)
    assert sessions.secret_key(tmp_path) == key and len(key) == 32
    assert (tmp_path / sessions.KEY_FILE).stat().st_mode & 0o777 == 0o600
    store = sessions.SessionStore()
    sid, grant = store.create("alice")
    assert sessions.unsign(sessions.sign(sid, key), key) == sid
    assert sessions.unsign("x" + sessions.sign(sid, key), key) is None  # another id, the same signature
    assert sessions.unsign(sessions.sign(sid, b"x" * 32), key) is None  # another secret
    assert sessions.unsign("nodot", key) is None and sessions.unsign(None, key) is None
    assert store.redeem(grant) == sid and store.redeem(grant) is None  # once
    assert store.use(sid, idle=60) == ("alice", None)
    clock = [1000.0]
    monkeypatch.setattr(sessions.time, "monotonic", lambda: clock[0])
    sid2, grant2 = store.create("bob")
    clock[0] += sessions.GRANT_TTL + 1
    assert store.redeem(grant2) is None  # too late
    clock[0] += 10
    assert store.use(sid2, idle=5) == (None, 5)  # idle: ended, and says so once
    assert store.use(sid2, idle=5) == (None, None)
    sid3, _ = store.create("carol")
    assert store.use(sid3, idle=0)[0] == "carol"
    clock[0] += sessions.MAX_AGE
    assert store.use(sid3, idle=0) == (None, None)  # the longest a session lives
    sid4, _ = store.create("dave")
    store.end(sid4)
    assert store.use(sid4, idle=60) == (None, None)
