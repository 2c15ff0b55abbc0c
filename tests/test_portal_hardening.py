"""The portal's exposure (issue 14, item 4), through Streamlit's AppTest on a real index and real copies:
a search's hard time limit ("too slow" at the limit while another user's page loads), RE2 patterns that
Python's ``re`` would never finish, failed logins (growing delays, a lockout, logged without the password),
idle sessions, spreadsheet-safe CSV, and loopback as the default address.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.test_portal import Seeder, app, click, ok, page, texts

NOW = datetime.now(timezone.utc).replace(microsecond=0)
PASSWORDS = {"victor": ("viewer", "victor-password"), "alice": ("admin", "alice-password")}
CATASTROPHIC = r"(a+)+$"  # Python's re backtracks exponentially on "aaa…a!"
SLOW_FOR_RE2 = r"[a-z](?:[^Q]{1,5}){100}Q"  # linear in RE2, but ~0.2 s per 10,000-character line
FORMULAS = ['=HYPERLINK("http://evil.example/","click")', "+SUM(1,1)", "-2+3", "@SUM(A1:A2)", "\tindented=1"]


@pytest.fixture(scope="module")
def hard_env(tmp_path_factory):
    """Three devices: one whose configuration holds spreadsheet formulas and a line that makes Python's
    ``re`` backtrack, one with long lines (slow for any engine), one plain; users victor and alice."""
    from cli.services import free_port
    from jobs.collect.inventory import load_inventory
    from jobs.settings import Settings
    from lab.generate_inventory import generate_inventory
    from portal.users import UsersFile

    home = tmp_path_factory.mktemp("portal-hardening")
    inventory = home / "inventory"
    names = generate_inventory(count=3, out=inventory, port=free_port(), base="127.0.121.0")
    env = {"DEVICEVAULT_HOME": str(home), "DEVICEVAULT_INVENTORY": str(inventory),
           "DEVICEVAULT_USERS_FILE": str(home / "users.yml"), "DEVICEVAULT_REDIS_URL": "redis://127.0.0.1:1/0"}
    mp = pytest.MonkeyPatch()
    for key, value in env.items():
        mp.setenv(key, value)
    for key in ("DEVICEVAULT_DATABASE_URL", "DEVICEVAULT_STORAGE_CONFIG"):
        mp.delenv(key, raising=False)
    settings = Settings.load()
    hosts = load_inventory(inventory)
    formulas, bulky, plain = names
    words = " ".join(f"interface{i} ip{i * 7 % 1000} vlan{i % 97}" for i in range(600))  # ~10,000 characters
    configs = {
        formulas: "\n".join([f"hostname {formulas}", "!", *FORMULAS, "a" * 40 + "!", "a" * 40, "end"]) + "\n",
        bulky: "\n".join([f"hostname {bulky}", *(f"description {n} {words}" for n in range(120)), "end"]) + "\n",
        plain: f"hostname {plain}\n!\ninterface Loopback0\nend\n",
    }
    Seeder(settings).run(NOW - timedelta(hours=1), {n: ("changed", text) for n, text in configs.items()},
                         group_of=lambda d: hosts[d].group, platform_of=lambda d: hosts[d].network_os)
    users = UsersFile(home / "users.yml")
    for name, (role, password) in PASSWORDS.items():
        users.add(name, role, password, rounds=4)
    yield {"home": home, "names": names, "formulas": formulas, "bulky": bulky, "plain": plain}
    mp.undo()


def _search(user: str, query: str, *, regex: bool = True):
    at = ok(page(user, "views/search.py"))
    at.text_input(key="search_query").set_value(query)
    at.checkbox(key="search_regex").set_value(regex)
    return click(at, "Search")


# --- search ---------------------------------------------------------------------------------------------
def test_a_catastrophic_regex_is_answered_at_once(hard_env, monkeypatch):
    """Python's re needs about 2**40 steps for this pattern on this line (years); the search's engine (RE2,
    linear) answers it in full within a limit that backtracking could never meet, however loaded the machine."""
    monkeypatch.setenv("DEVICEVAULT_PORTAL_SEARCH_TIMEOUT", "120")
    line = "a" * 40 + "!"
    # what Python's re does with it: still busy after 3 s (a real process, killed)
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", f"import re; re.search({CATASTROPHIC!r}, {line!r})"], timeout=3)
    started = time.monotonic()
    at = ok(_search("victor", CATASTROPHIC))
    took = time.monotonic() - started
    found = at.session_state["search_result"]
    assert not found["too_slow"] and found["searched"] == 3
    assert list(found["frame"]["text"]) == ["a" * 40] and list(found["frame"]["device"]) == [hard_env["formulas"]]
    assert "Too slow" not in texts(at)
    print(f"\ncatastrophic regex {CATASTROPHIC!r} (Python's re: still busy after 3 s): answered in full by RE2 in "
          f"{took:.2f} s, {found['searched']} configurations searched")


def test_a_slow_search_is_answered_too_slow_at_its_limit_while_another_user_page_loads(hard_env, monkeypatch):
    limit = 12  # the bulky device alone needs about 24 s; another user's page needs far less, however loaded
    monkeypatch.setenv("DEVICEVAULT_PORTAL_SEARCH_TIMEOUT", str(limit))
    ok(app("alice").run())  # the dashboard's imports are loaded once, before the clock runs
    searched: dict = {}

    def viewer() -> None:
        searched["at"] = _search("victor", SLOW_FOR_RE2)

    search = threading.Thread(target=viewer)
    started = time.monotonic()
    search.start()
    deadline = time.monotonic() + 30  # wait until the viewer's search is running (its own thread)
    while not any(t.name == "devicevault-search" for t in threading.enumerate()):
        assert time.monotonic() < deadline and search.is_alive(), "the search never started"
        time.sleep(0.01)
    page_started = time.monotonic()
    dashboard = ok(app("alice").run())
    page_took = time.monotonic() - page_started
    still_searching = search.is_alive()
    search.join(120)
    search_took = time.monotonic() - started
    assert [t.value for t in dashboard.title] == ["Dashboard"]
    assert still_searching, "the dashboard should have loaded while the search was running"
    assert not search.is_alive(), "the search was not stopped at its limit"
    at = searched["at"]
    assert not at.exception
    found = at.session_state["search_result"]
    assert found["too_slow"]
    assert any(e.value.startswith(f"Too slow: the search was too slow: stopped at its {limit} s limit") for e in at.error)
    print(f"\nslow search (limit {limit} s): 'Too slow' answered {search_took:.1f} s after it started; another "
          f"user's dashboard loaded meanwhile in {page_took:.1f} s")


def test_patterns_re2_does_not_have_are_refused_readably(hard_env):
    at = _search("victor", r"(\w+) \1")
    assert not at.exception
    assert any("invalid regular expression" in e.value and "RE2" in e.value for e in at.error)


def test_csv_export_neutralises_spreadsheet_formulas(hard_env):
    from portal import content

    at = ok(_search("victor", r"^(?:[=+@\t\r-]|hostname)"))
    frame = at.session_state["search_result"]["frame"]
    assert set(FORMULAS) <= set(frame["text"])  # the page shows the device's lines as they are
    exported = content.csv_export(frame).decode()  # what "Export CSV" downloads
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(exported)))
    texts_out = {r["text"] for r in rows}
    for formula in FORMULAS:
        assert "'" + formula in texts_out, formula
    assert f"hostname {hard_env['formulas']}" in texts_out  # ordinary cells unchanged
    assert not any(r[c][:1] in "=+-@\t\r" for r in rows for c in r), "a cell still starts like a formula"


# --- logins -----------------------------------------------------------------------------------------------
def _attempt(at, name: str, password: str, *, timeout: float = 30.0) -> str:
    """Submit the login form; while the client must wait (a growing delay) try again once the page says the
    wait is over. The final error (or "" after a login)."""
    deadline = time.monotonic() + timeout
    while True:
        at.text_input(key="login_username").set_value(name)
        at.text_input(key="login_password").set_value(password)
        click(at, "Log in")
        errors = [e.value for e in at.error]
        if not errors or not errors[0].startswith("Too many failed logins: wait"):
            return errors[0] if errors else ""
        assert time.monotonic() < deadline, errors
        time.sleep(0.05)


def test_ten_wrong_passwords_from_one_client_lock_it_out_and_are_logged(hard_env, monkeypatch, caplog):
    monkeypatch.setenv("DEVICEVAULT_PORTAL_LOGIN_ATTEMPTS", "10")
    monkeypatch.setenv("DEVICEVAULT_PORTAL_LOGIN_DELAY", "0.05")  # 0.05 s, doubling: the test stays short
    monkeypatch.setenv("DEVICEVAULT_PORTAL_LOCKOUT", "600")
    caplog.set_level(logging.INFO, logger="devicevault.portal")
    at = app().run()
    wrong = [f"guess-{n}-secret" for n in range(10)]
    names = ["victor", "alice", "nobody", "admin", "root"]  # from one client, several user names
    delays = []
    for n, password in enumerate(wrong):
        message = _attempt(at, names[n % len(names)], password)
        assert message.startswith("Wrong user name or password."), message
        if "wait" in message:
            delays.append(message)
    assert delays and "wait 1 s before the next attempt" in delays[0], "no growing delay between the failures"
    assert "locked out" in message
    # locked out: even the right password is refused, and not checked
    refused = _attempt(at, "victor", "victor-password")
    assert "locked out" in refused and "portal_user" not in at.session_state
    log = "\n".join(r.getMessage() for r in caplog.records if r.name == "devicevault.portal")
    assert "client unknown locked out for 600 s after 10 failed logins" in log
    assert log.count("failed login for") == 10 and "refused: client unknown locked out" in log
    for secret in [*wrong, "victor-password"]:
        assert secret not in log
    print(f"\n10 wrong passwords from one client: {len(delays)} growing delays, then locked out (the right password "
          f"refused: {refused!r}); log: {log.count('failed login for')} 'failed login' lines, then "
          f"{next(line for line in log.splitlines() if 'locked out for' in line)!r}")


def test_login_limits_per_user_name_across_clients_and_delays_grow():
    from portal.logins import LoginLimiter

    now = [1000.0]
    limiter = LoginLimiter(attempts=5, delay=1.0, lockout=300.0, clock=lambda: now[0])
    waits = []
    for n in range(5):  # the same user name from five clients
        refusal = limiter.refused("victor", f"10.0.0.{n}")
        if refusal is not None:
            waits.append(refusal.seconds)
            now[0] += refusal.seconds
        assert limiter.refused("victor", f"10.0.0.{n}") is None
        limiter.failed("victor", f"10.0.0.{n}")
    assert waits == [1.0, 2.0]  # after the 3rd and 4th failures in a row
    refusal = limiter.refused("victor", "192.0.2.1")  # a new client: the user name is locked out
    assert refusal is not None and refusal.locked and refusal.what == "user victor" and refusal.seconds == 300
    assert limiter.refused("alice", "192.0.2.1") is None  # other users are not
    now[0] += 301
    assert limiter.refused("victor", "192.0.2.1") is None
    limiter.failed("victor", "192.0.2.1")
    limiter.succeeded("victor", "192.0.2.1")
    assert limiter.refused("victor", "192.0.2.1") is None


def test_behind_a_trusted_proxy_the_client_is_the_forwarded_address():
    from portal.logins import client_of

    assert client_of("192.0.2.7", None) == "192.0.2.7"
    assert client_of(None, None) == "unknown"
    # an untrusted peer's X-Forwarded-For is ignored (anyone can send the header)
    assert client_of("192.0.2.7", "10.9.9.9") == "192.0.2.7"
    proxies = ["127.0.0.1", "10.0.0.2"]
    assert client_of("127.0.0.1", "198.51.100.4", proxies) == "198.51.100.4"
    # a client's own (forged) entries are at the left; the proxies append the real peer at the right
    assert client_of("127.0.0.1", "1.2.3.4, 198.51.100.4", proxies) == "198.51.100.4"
    assert client_of("127.0.0.1", "198.51.100.4, 10.0.0.2", proxies) == "198.51.100.4"  # two proxies
    assert client_of("127.0.0.1", None, proxies) == "127.0.0.1"


def test_a_session_ends_after_its_idle_time(hard_env, monkeypatch):
    monkeypatch.setenv("DEVICEVAULT_PORTAL_IDLE_TIMEOUT", "1")
    at = app().run()
    assert _attempt(at, "victor", "victor-password") == ""
    assert at.session_state["portal_user"] == "victor" and [t.value for t in at.title] == ["Dashboard"]
    idle_until = time.monotonic() + 1.2
    while time.monotonic() < idle_until:  # the user does nothing for longer than the idle time
        time.sleep(0.05)
    at.run()
    assert "portal_user" not in at.session_state and not at.metric
    assert [w.key for w in at.text_input] == ["login_username", "login_password"]
    assert any("session ended after 1 s without use" in i.value for i in at.info)


def test_the_portal_listens_on_loopback_unless_told_otherwise():
    from click.testing import CliRunner

    from cli.operations import up
    from cli.portal import portal, streamlit_command

    flags = dict(zip(streamlit_command(8600)[5::2], streamlit_command(8600)[6::2]))
    assert flags["--server.address"] == "127.0.0.1"
    assert dict(zip(streamlit_command(8600, "0.0.0.0")[5::2], streamlit_command(8600, "0.0.0.0")[6::2]))[
        "--server.address"] == "0.0.0.0"
    assert "[default: 127.0.0.1]" in CliRunner().invoke(portal, ["--help"]).output
    assert "[default: 127.0.0.1]" in CliRunner().invoke(up, ["--help"]).output
