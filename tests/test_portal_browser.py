"""The portal in a real browser: Playwright drives Debian's Chromium (headless) against ``devicevault portal``
(``streamlit run``), with a real lab, worker, consumer and redis-server behind it.

A user logs in, starts a backup of a lab device whose configuration changed, waits for the run to end,
opens the device's diff and sees the new version against the old one. Screenshots of each step are saved
in the test's temporary directory (their paths are printed).
"""

from __future__ import annotations

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
        procs.append(dv.process("portal", "--port", str(port), "--address", "127.0.0.1", name="portal").start())
        _wait_http(f"http://127.0.0.1:{port}/_stcore/health")
        yield {"url": f"http://127.0.0.1:{port}/", "host": host, "home": home, "dv": dv}
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
