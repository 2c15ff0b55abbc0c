"""The portal in a real browser: Playwright drives Debian's Chromium (headless) against ``devicevault portal``
(``streamlit run``), with a real lab, worker, consumer and redis-server behind it.

A user logs in, starts a backup of a lab device whose configuration changed, waits for the run to end,
opens the device's diff and sees the new version against the old one. Sessions and links: a reload and a new
tab keep the session (an HttpOnly cookie), a copied diff URL opened in a fresh browser asks for the login
and then shows exactly that diff, an idle session asks for the login again, a viewer opening an operator's
link sees the role message on that page. "Back up now" on a changed device shows its new version; a run of
every device (one batch) shows each device as its result arrives, while another device of the same batch is
still being backed up (the lab holds it with its ``pause`` fault). Screenshots of each
step are saved in the test's temporary directory (their paths are printed).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSWORD = "operator-password-1"
VIEWER_PASSWORD = "viewer-password-1"
IDLE_TIMEOUT = 6  # seconds, for the second portal of the expired-session test

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make setup)")


def _wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer within {timeout} s")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def portal(tmp_path_factory, redis_server):
    """A lab of 3 devices backed up once, then one of them changed; workers, consumer and the portal."""
    from cli.services import free_port
    from lab.generate_inventory import generate_inventory
    from lab.testing import start_lab, stop_lab

    from tests.conftest import DeviceVault

    home = tmp_path_factory.mktemp("portal-browser")
    inventory = home / "inventory"
    names = generate_inventory(count=3, out=inventory, port=free_port(), base="127.0.90.0")
    env = {
        "DEVICEVAULT_HOME": str(home),
        "DEVICEVAULT_REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/11",
        "DEVICEVAULT_INVENTORY": str(inventory),
        "DEVICEVAULT_DEVICE_TIMEOUT": "8",
        "DEVICEVAULT_JOB_TIMEOUT": "180",
        "DEVICEVAULT_COLLECT_RETRIES": "0",
        "DEVICEVAULT_USERS_FILE": str(home / "users.yml"),
    }
    dv = DeviceVault(env, home)
    # create the index before several processes open it at once (they would race to migrate it)
    from storage.index.db import upgrade

    upgrade(dv.settings.database_url)
    start_lab(inventory, home / "lab")
    procs = [dv.process("worker", "--name", f"portal-worker-{free_port()}", name="worker").start(),
             dv.process("consumer", "--name", "portal-indexer", name="consumer").start()]
    port = free_port()
    try:
        dv("backup", "--wait", "--json", timeout=240)
        host = names[0]
        dv("lab", "change", host)
        import os

        added = subprocess.run([sys.executable, "-m", "cli", "users", "add", "olga", "--role", "operator",
                                "--password-stdin"], input=PASSWORD + "\n", text=True, capture_output=True,
                               env={**os.environ, **env}, cwd=ROOT)
        assert added.returncode == 0, added.stderr
        added = subprocess.run([sys.executable, "-m", "cli", "users", "add", "vera", "--role", "viewer",
                                "--password-stdin"], input=VIEWER_PASSWORD + "\n", text=True, capture_output=True,
                               env={**os.environ, **env}, cwd=ROOT)
        assert added.returncode == 0, added.stderr
        procs.append(dv.process("portal", "--port", str(port), "--address", "127.0.0.1", name="portal").start())
        _wait_http(f"http://127.0.0.1:{port}/_stcore/health")
        yield {"url": f"http://127.0.0.1:{port}/", "host": host, "home": home, "dv": dv, "names": names}
    finally:
        for p in procs:
            p.stop()
        stop_lab(home / "lab")


def test_log_in_trigger_a_backup_and_open_its_diff(portal, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    host = portal["host"]
    shots = []
    expect.set_options(timeout=30_000)

    def shot(page, name: str) -> None:
        path = tmp_path / f"{len(shots) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shots.append(path)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 2200})
            page.set_default_timeout(30_000)
            page.goto(portal["url"])
            expect(page.get_by_text("Log in").first).to_be_visible()
            assert page.get_by_text("Devices").count() == 0  # nothing but the login form
            shot(page, "login")
            page.get_by_role("textbox", name="User name").fill("olga")
            page.get_by_role("textbox", name="Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
            expect(page.get_by_text("Logged in as")).to_be_visible()
            expect(page.get_by_role("heading", name="Recently changed")).to_be_visible()
            expect(page.locator("[data-testid='stMetric']").first).to_be_visible()
            expect(page.locator("[data-testid='stDataFrame']").first).to_be_visible()
            expect(page.locator("[data-testid='stVegaLiteChart']").first).to_be_visible()
            shot(page, "dashboard")

            for name, heading in (("Devices", "Devices"), ("Search", "Search"), ("Health", "Health")):
                page.get_by_role("link", name=name, exact=True).click()
                expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
                if name == "Devices":
                    expect(page.get_by_text("3 device(s) match")).to_be_visible()
                    expect(page.get_by_text("Rows per page")).to_be_visible()
                    expect(page.get_by_role("combobox").first).to_be_visible()
                elif name == "Search":
                    page.get_by_role("textbox", name="Text or regular expression").fill("hostname")
                    page.get_by_role("button", name="Search").click()
                    expect(page.get_by_text("3 matching line(s) in 3 device(s)")).to_be_visible()
                else:
                    expect(page.get_by_text("Redis answers.")).to_be_visible()
                    expect(page.get_by_role("heading", name="Workers")).to_be_visible()
                assert page.locator("[data-testid='stException']").count() == 0
                shot(page, name.lower())

            page.get_by_role("link", name="Runs").click()
            expect(page.get_by_role("heading", name="Start a backup")).to_be_visible()
            device_box = page.get_by_role("combobox", name="Device")
            device_box.click()
            page.get_by_role("option", name=host, exact=True).click()
            expect(device_box).to_have_value(host)
            page.get_by_role("button", name="Start backup").click()
            expect(page.get_by_text("device(s) done")).to_be_visible()
            shot(page, "run-started")
            expect(page.get_by_text("1 of 1 device(s) done")).to_be_visible(timeout=150_000)
            expect(page.get_by_text("succeeded", exact=False).first).to_be_visible(timeout=60_000)
            shot(page, "run-finished")

            page.get_by_role("button", name=f"Open diff of {host}").click()
            expect(page.get_by_role("heading", name="Device")).to_be_visible()
            code = page.locator("[data-testid='stCode']").first
            expect(code).to_contain_text(f"{host} v1", timeout=30_000)
            expect(code).to_contain_text(f"{host} v2")
            diff = code.inner_text()
            changed = [line for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]
            assert changed, diff
            shot(page, "diff-unified")
            page.get_by_text("side by side").click()
            expect(page.locator("[data-testid='stDataFrame']").first).to_be_visible()
            shot(page, "diff-side-by-side")
        finally:
            browser.close()
    print("screenshots:", *shots, sep="\n  ")
    assert all(p.stat().st_size > 10_000 for p in shots)
    versions = portal["dv"].json("versions", host)
    assert len(versions) == 2


# --- sessions, links, "Back up now", live progress ---------------------------------------------------------
@pytest.fixture()
def browser():
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _new_page(context):
    page = context.new_page()
    page.set_default_timeout(30_000)
    return page


def _log_in(page, user: str = "olga", password: str = PASSWORD) -> None:
    from playwright.sync_api import expect

    expect(page.get_by_role("textbox", name="User name")).to_be_visible()
    page.get_by_role("textbox", name="User name").fill(user)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("Logged in as")).to_be_visible()
    _wait_cookie(page.context)  # the page trades its grant for the cookie right after the login


def _session_cookie(context) -> dict | None:
    return next((c for c in context.cookies() if c["name"] == "devicevault_session"), None)


def _wait_cookie(context, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while (cookie := _session_cookie(context)) is None:
        assert time.monotonic() < deadline, "no session cookie was set"
        time.sleep(0.1)
    return cookie


def test_back_up_now_on_the_device_page_shows_the_new_version(portal, browser, tmp_path):
    from playwright.sync_api import expect

    host = portal["names"][1]
    portal["dv"]("lab", "change", host)
    page = _new_page(browser.new_context(viewport={"width": 1500, "height": 1800}))
    page.goto(f"{portal['url']}device?device={host}")
    _log_in(page)
    expect(page.get_by_role("heading", name="Device")).to_be_visible()
    page.get_by_role("button", name="Back up now").click()
    expect(page.get_by_text("Backed up: a new version")).to_be_visible(timeout=150_000)
    code = page.locator("[data-testid='stCode']").first
    expect(code).to_contain_text(f"{host} v1")
    expect(code).to_contain_text(f"{host} v2")
    expect(page).to_have_url(re.compile(r"[?&]b=2(&|$)"))
    page.get_by_role("tab", name="Runs").click()
    expect(page.get_by_text(f"result(s) of {host}")).to_be_visible()
    page.screenshot(path=str(tmp_path / "back-up-now.png"), full_page=True)
    assert len(portal["dv"].json("versions", host)) == 2


def test_reload_new_tab_and_a_copied_diff_link(portal, browser, tmp_path):
    from playwright.sync_api import expect

    host = portal["names"][1]
    if len(portal["dv"].json("versions", host)) < 2:  # run alone: give the device a second version
        portal["dv"]("lab", "change", host)
        portal["dv"]("backup", "--host", host, "--wait", timeout=240)
    context = browser.new_context(viewport={"width": 1500, "height": 1800})
    page = _new_page(context)
    page.goto(portal["url"])
    _log_in(page)
    cookie = _wait_cookie(context)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > time.time()
    assert "devicevault_session" not in page.evaluate("document.cookie")  # scripts cannot read it
    key = portal["home"] / "portal-session.key"
    assert key.stat().st_mode & 0o777 == 0o600
    # a diff chosen on the page is in the URL
    page.goto(f"{portal['url']}device?device={host}")
    expect(page.get_by_role("heading", name="Device")).to_be_visible()
    code = page.locator("[data-testid='stCode']").first
    expect(code).to_contain_text(f"{host} v2")
    page.get_by_text("side by side").click()
    expect(page).to_have_url(re.compile(r"mode=side"))
    page.get_by_text("unified").click()
    expect(page).to_have_url(re.compile(r"mode=unified"))
    expect(page).to_have_url(re.compile(r"[?&]a=1(&|$)"))
    link = page.url
    # reload: still logged in, the same page and diff
    page.reload()
    expect(page.get_by_role("heading", name="Device")).to_be_visible()
    expect(page.locator("[data-testid='stCode']").first).to_contain_text(f"{host} v1")
    assert page.get_by_role("textbox", name="Password").count() == 0
    # a new tab of the same browser: logged in
    tab = _new_page(context)
    tab.goto(f"{portal['url']}health")
    expect(tab.get_by_role("heading", name="Health")).to_be_visible()
    expect(tab.get_by_text("Logged in as")).to_be_visible()
    assert tab.get_by_role("textbox", name="Password").count() == 0
    # the link in a fresh browser: the login first, then exactly that diff
    fresh = _new_page(browser.new_context(viewport={"width": 1500, "height": 1800}))
    fresh.goto(link)
    expect(fresh.get_by_role("textbox", name="Password")).to_be_visible()
    assert fresh.get_by_text("Page not found").count() == 0
    fresh.screenshot(path=str(tmp_path / "link-login.png"), full_page=True)
    _log_in(fresh)
    expect(fresh.get_by_role("heading", name="Device")).to_be_visible()
    code = fresh.locator("[data-testid='stCode']").first
    expect(code).to_contain_text(f"{host} v1")
    expect(code).to_contain_text(f"{host} v2")
    assert fresh.url == link
    assert fresh.get_by_text("Page not found").count() == 0
    fresh.screenshot(path=str(tmp_path / "link-diff.png"), full_page=True)
    # log out ends the session in every tab: a reload of the first tab asks for the password
    tab.get_by_role("button", name="Log out").click()
    expect(tab.get_by_role("textbox", name="Password")).to_be_visible()
    page.reload()
    expect(page.get_by_role("textbox", name="Password")).to_be_visible()


def test_a_viewer_opening_an_operator_link_sees_the_role_message(portal, browser):
    from playwright.sync_api import expect

    host = portal["names"][2]
    page = _new_page(browser.new_context(viewport={"width": 1500, "height": 1500}))
    page.goto(f"{portal['url']}runs?scope=device&device={host}")
    _log_in(page, "vera", VIEWER_PASSWORD)
    expect(page.get_by_role("heading", name="Runs")).to_be_visible()
    expect(page.get_by_text("needs the operator role")).to_be_visible()
    assert page.get_by_role("button", name="Start backup").count() == 0
    assert page.get_by_text("Page not found").count() == 0
    page.goto(f"{portal['url']}users")
    expect(page.get_by_text("needs the admin role")).to_be_visible()
    assert page.get_by_text("Page not found").count() == 0
    page.goto(f"{portal['url']}device?device={host}")
    expect(page.get_by_role("heading", name="Device")).to_be_visible()
    assert page.get_by_role("button", name="Back up now").count() == 0


def test_an_idle_session_asks_for_login_again(portal, browser):
    """A second portal on the same installation with a short idle timeout."""
    from playwright.sync_api import expect

    from cli.services import free_port

    port = free_port()
    proc = portal["dv"].process("portal", "--port", str(port), "--address", "127.0.0.1", name="portal-idle",
                                env={"DEVICEVAULT_PORTAL_IDLE_TIMEOUT": str(IDLE_TIMEOUT)}).start()
    try:
        _wait_http(f"http://127.0.0.1:{port}/_stcore/health")
        context = browser.new_context()
        page = _new_page(context)
        page.goto(f"http://127.0.0.1:{port}/device?device={portal['host']}")
        _log_in(page)
        expect(page.get_by_role("heading", name="Device")).to_be_visible()
        _wait_cookie(context)
        page.reload()  # within the timeout: still in
        expect(page.get_by_role("heading", name="Device")).to_be_visible()
        last_use = time.monotonic()
        assert page.get_by_role("textbox", name="Password").count() == 0
        time.sleep(max(0.0, last_use + IDLE_TIMEOUT + 1 - time.monotonic()))  # the timeout itself must pass
        page.reload()
        expect(page.get_by_role("textbox", name="Password")).to_be_visible()
        expect(page.get_by_text("Your session ended")).to_be_visible()
    finally:
        proc.stop()


def test_a_run_of_every_device_shows_them_finishing_one_by_one(portal, browser, tmp_path):
    """All devices go in one batch (one job); the last is held by the lab until the others show as done on
    the page, so their results must reach the page while the batch still runs."""
    from playwright.sync_api import expect

    from lab.control import LabControl

    total, held = len(portal["names"]), portal["names"][-1]
    lab = LabControl(portal["home"] / "lab")
    inventory = Path(portal["dv"].env["DEVICEVAULT_INVENTORY"])
    slow = inventory / "host_vars" / f"{held}.yml"  # held as long as the page needs, however slow the machine
    slow.parent.mkdir(exist_ok=True)
    slow.write_text("ansible_connect_timeout: 300\nansible_command_timeout: 300\n")
    lab.set_fault(held, "pause")
    try:
        page = _new_page(browser.new_context(viewport={"width": 1500, "height": 1800}))
        page.goto(f"{portal['url']}runs?scope=all")
        _log_in(page)
        expect(page.get_by_role("heading", name="Start a backup")).to_be_visible()
        expect(page.get_by_text(f"{total} device(s) will be backed up.")).to_be_visible()
        page.get_by_role("button", name="Start backup").click()
        expect(page).to_have_url(re.compile(r"[?&]run="))
        expect(page.get_by_text(f"{total - 1} of {total} device(s) done")).to_be_visible(timeout=150_000)
        table = page.locator("[data-testid='stDataFrame']").first
        expect(table).to_contain_text("waiting")
        page.screenshot(path=str(tmp_path / f"run-{total - 1}-of-{total}.png"), full_page=True)
    finally:
        lab.set_fault(held, "none")
        slow.unlink()
    expect(page.get_by_text(f"{total} of {total} device(s) done")).to_be_visible(timeout=150_000)
    expect(page.get_by_text("succeeded", exact=False).first).to_be_visible(timeout=60_000)
    # a reload keeps the run (its id is in the URL)
    page.reload()
    expect(page.get_by_text(f"{total} of {total} device(s) done")).to_be_visible()


def _pixels_of(png: bytes, colour: str) -> int:
    """How many pixels of the screenshot ``png`` are exactly ``colour`` (``#rrggbb``)."""
    import io

    from PIL import Image

    wanted = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    image = Image.open(io.BytesIO(png)).convert("RGB")
    return sum(count for count, rgb in image.getcolors(maxcolors=1 << 24) if rgb == wanted)


def test_the_devices_table_shows_failed_stale_and_unsaved_in_their_colours_with_ages(portal, browser, tmp_path):
    """One device failed (the lab rejects its password), one stale (its last success moved two days back in the
    index, then the hygiene run that marks stale devices), one unsaved (changed on the lab, not saved): the
    devices table says so in words, in each word's colour (``portal.ui.HEALTH_COLOURS``, looked for in the
    rendered grid's pixels), and gives each last backup as an age."""
    import sqlite3
    from datetime import datetime, timedelta

    from playwright.sync_api import expect

    from lab.control import LabControl
    from portal.ui import HEALTH_COLOURS

    dv, names = portal["dv"], portal["names"]
    unsaved, failed, stale = names  # ams-ios-01 (IOS knows its startup configuration), ams-eos-01, ams-nxos-01
    lab = LabControl(portal["home"] / "lab")
    lab.change(unsaved)
    lab.set_fault(failed, "auth_fail")
    try:
        ran = dv("backup", "--wait", "--json", timeout=240, check=False)  # exits 1: a device failed
    finally:
        lab.set_fault(failed, "none")
    assert ran.returncode == 1, ran.stdout + ran.stderr
    with sqlite3.connect(portal["home"] / "index.sqlite") as db:
        (last,) = db.execute("SELECT last_success_at FROM devices WHERE name = ?", (stale,)).fetchone()
        old = datetime.fromisoformat(last) - timedelta(days=2)
        db.execute("UPDATE devices SET last_success_at = ? WHERE name = ?", (old.isoformat(sep=" "), stale))
    dv("hygiene")
    page = _new_page(browser.new_context(viewport={"width": 1600, "height": 1200}))
    page.goto(f"{portal['url']}devices")
    _log_in(page)
    expect(page.get_by_role("heading", name="Devices")).to_be_visible()
    table = page.locator("[data-testid='stDataFrame']").first
    for word in ("failed", "stale", "unsaved"):
        expect(table).to_contain_text(word)
    expect(table).to_contain_text(re.compile(r"2 d(ays?)? ago"))  # the stale device's last backup, as an age
    deadline = time.monotonic() + 30  # the grid paints its canvas after its text is in place
    while True:
        png = table.screenshot(path=str(tmp_path / "devices.png"))
        found = {word: _pixels_of(png, HEALTH_COLOURS[word][0]) for word in ("failed", "stale", "unsaved")}
        if all(count > 200 for count in found.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert all(count > 200 for count in found.values()), found  # each status cell's background band
