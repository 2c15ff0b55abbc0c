"""Notifications (issue 16, item 1) end to end: a real lab, real Redis, a worker, the index consumer and the
notifier as processes; a real HTTP receiver (a thread here that checks every HMAC-SHA256 signature) and a real
SMTP server (aiosmtpd, STARTTLS with a certificate made here, and a login). One module fixture; the tests run in
file order on it.
"""

from __future__ import annotations

import base64
import datetime as dt
import email
import hashlib
import hmac
import json
import ssl
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cli.services import free_port
from tests.conftest import wait_for

HOOK_SECRET = "hook-secret-7Hq2x9"
SMTP_PASSWORD = "smtp-password-K3v8r"


class Receiver:
    """A webhook receiver: accepts a POST only with a valid signature; can be stopped and started again on
    its port (a receiver that is down for a while)."""

    def __init__(self, port: int, secret: str):
        self.port, self.secret = port, secret.encode()
        self.got: list[tuple[str, dict]] = []  # (X-DeviceVault-Delivery, body)
        self.bad: list[bytes] = []
        self.chat: list[tuple[str, dict]] = []  # (path, body) of the Slack and Teams posts
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path in ("/slack", "/teams"):  # chat formats: no signature
                    with receiver.lock:
                        receiver.chat.append((self.path, json.loads(body)))
                    self.send_response(200)
                    self.end_headers()
                    return
                expected = "sha256=" + hmac.new(receiver.secret, body, hashlib.sha256).hexdigest()
                ok = hmac.compare_digest(expected, self.headers.get("X-DeviceVault-Signature", ""))
                with receiver.lock:
                    if ok:
                        receiver.got.append((self.headers["X-DeviceVault-Delivery"], json.loads(body)))
                    else:
                        receiver.bad.append(body)
                self.send_response(200 if ok else 401)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def events(self, kind: str, device: str | None = None) -> list[dict]:
        with self.lock:
            return [b for _, b in self.got if b.get("kind") == kind and (device is None or b.get("device") == device)]


class Mailbox:
    """aiosmtpd's handler: keeps every message received."""

    def __init__(self):
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def versions(self, device: str | None = None) -> list[email.message.Message]:
        """The one-per-event mails about new versions (not the digests)."""
        return [m for m in self.messages if "new configuration version" in m["Subject"]
                and m["To"] == "neteng@example.com" and (device is None or device in m["Subject"])]

    def digests(self, run_id: str) -> list[email.message.Message]:
        return [m for m in self.messages if m["To"] == "digest@example.com" and run_id in m["Subject"]]


def _certificate(directory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA): (cert file, key file)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "smtp.crt", directory / "smtp.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


RULES = """
channels:
  hook: {type: webhook, url: "http://127.0.0.1:9/hook", secret_env: DV_SECRET}
rules:
  - {name: night, events: [failed], channels: [hook], quiet_hours: "22:00-06:00"}
  - {name: few, events: [failed], channels: [hook], rate_limit: 2/hour, groups: [core], devices: ["r*"]}
  - {name: ny, events: [compliance], channels: [hook], quiet_hours: "22:00-06:00", timezone: America/New_York}
"""


def test_quiet_hours_and_rate_limits_only_move_a_delivery_and_a_repeat_is_not_queued(redis_server):
    """``route`` on the real Redis (database 1, emptied; before the module's DeviceVault starts there)."""
    from redis import Redis

    from jobs.notify import queue
    from jobs.notify.events import Event
    from jobs.notify.notifier import route
    from jobs.notify.rules import EventKind, parse_rules

    redis = Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/1")
    redis.flushdb()
    rules = parse_rules(RULES, env={"DV_SECRET": "s3cret-value"})
    night = dt.datetime(2026, 11, 30, 23, 30, tzinfo=dt.timezone.utc).timestamp()
    events = [Event(id=f"failed:r{i}:t", kind=EventKind.FAILED, title="x", device=f"r{i}", group="core")
              for i in range(3)]
    assert route(redis, rules, events, now=night) == 6  # 3 events x 2 rules
    assert route(redis, rules, events, now=night) == 0  # the same events again: nothing new
    due = {k.decode(): score for k, score in redis.zrange(queue.DUE, 0, -1, withscores=True)}
    six = dt.datetime(2026, 12, 1, 6, 0, tzinfo=dt.timezone.utc).timestamp()
    assert [due[f"failed:r{i}:t|night|hook"] for i in range(3)] == [six] * 3  # after the quiet hours
    hour = (night // 3600) * 3600
    assert [due[f"failed:r{i}:t|few|hook"] for i in range(3)] == [night, night, hour + 3600]  # 2 per hour
    other = Event(id="failed:x1:t", kind=EventKind.FAILED, title="x", device="x1", group="core")
    assert route(redis, rules, [other], now=night) == 1  # only 'night': 'few' wants devices r*
    assert rules.mask("token s3cret-value") == "token REDACTED"
    # quiet hours on a rule's own clock: 23:30 UTC is 18:30 in New York (not quiet); 04:00 UTC on 2026-11-01
    # is 00:00 EDT (quiet), and the quiet hours end at 06:00 local, EST by then (summer time ends at 02:00):
    # 11:00 UTC, not 10:00
    ny = rules.rules["ny"]
    assert ny.quiet_until(dt.datetime.fromtimestamp(night, dt.timezone.utc)) is None
    assert ny.quiet_until(dt.datetime(2026, 11, 1, 4, 0, tzinfo=dt.timezone.utc)) == \
        dt.datetime(2026, 11, 1, 11, 0, tzinfo=dt.timezone.utc)
    # a run's digest: what joined it is sent with it, once; what comes after it went is sent on its own
    digest, key = "notify:digest:d:mail:run1", queue.delivery_key("digest:run1", "d", "mail")
    assert queue.hold_for_digest(redis, key, digest, {"id": "version:1", "kind": "version"})
    queue.enqueue(redis, key, "d", "mail", [{"id": "run:run1", "kind": "run_finished"}], digest=digest)
    assert [e["id"] for e in queue.freeze_digest(redis, key, digest)] == ["run:run1", "version:1"]
    assert [e["id"] for e in queue.freeze_digest(redis, key, digest)] == ["run:run1", "version:1"]  # a retry
    assert queue.hold_for_digest(redis, key, digest, {"id": "version:1", "kind": "version"})  # a repeat: in it
    assert not queue.hold_for_digest(redis, key, digest, {"id": "version:2", "kind": "version"})  # too late
    redis.flushdb()


def test_a_receiver_that_hangs_holds_back_only_its_own_channel(redis_server, tmp_path):
    """Two webhook channels of one rule: one receiver takes the request and answers only when the test lets
    it (a hung receiver, within the channel's timeout); the other channel's delivery arrives meanwhile, while
    the first is still being sent (not failed, not retried). Real HTTP receivers, real Redis (database 1)."""
    from redis import Redis

    from jobs.notify import queue
    from jobs.notify.events import Event
    from jobs.notify.notifier import Pump, RulesFile, route
    from jobs.notify.rules import EventKind

    redis = Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/1")
    redis.flushdb()
    release, arrived = threading.Event(), threading.Event()

    class Hung(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers["Content-Length"]))
            arrived.set()
            release.wait(120)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    hung = ThreadingHTTPServer(("127.0.0.1", free_port()), Hung)
    threading.Thread(target=hung.serve_forever, daemon=True).start()
    quick = Receiver(free_port(), "quick-secret").start()
    path = tmp_path / "notifications.yml"
    path.write_text(f"""
channels:
  hang: {{type: webhook, url: "http://127.0.0.1:{hung.server_address[1]}/hook", timeout: 120}}
  quick: {{type: webhook, url: "http://127.0.0.1:{quick.port}/hook", secret_env: DV_QUICK}}
rules:
  - {{name: both, events: [failed], channels: [hang, quick]}}
""")
    rules = RulesFile(path, env={"DV_QUICK": "quick-secret"})
    event = Event(id="failed:r1:t", kind=EventKind.FAILED, title="x", device="r1", group="core")
    assert route(redis, rules.current(), [event]) == 2
    pump = Pump(redis, rules)
    sending = threading.Thread(target=pump.once, daemon=True)
    sending.start()
    try:
        wait_for(arrived.is_set, "the hung receiver's request")
        wait_for(lambda: quick.events("failed"), "the other channel's delivery while the first one hangs")
        hanging = queue.load(redis, queue.delivery_key(event.id, "both", "hang"))
        assert (hanging.status, hanging.tries) == (queue.Status.QUEUED, 0)  # still being sent, not failed
    finally:
        release.set()
        sending.join(60)
        hung.shutdown()
        hung.server_close()
        quick.stop()
    assert queue.load(redis, queue.delivery_key(event.id, "both", "hang")).status == queue.Status.SENT
    assert pump.sent == 2 and pump.failures == 0
    redis.flushdb()


@pytest.mark.parametrize("text, cause", [
    ("channels: [", "not valid YAML: line 1"),
    ("rules: [{name: a, events: [nope], channels: [x]}]", "rule 'a': unknown event 'nope'"),
    ("channels: {x: {type: webhook, url: 'http://h'}}\nrules: [{name: a, events: [failed], channels: [y]}]",
     "rule 'a': no channel 'y' in channels"),
    ("channels: {x: {type: fax}}", "channel 'x': unknown type 'fax'"),
    ("channels: {x: {type: email, host: h, from: a@b, to: [c@d], password_env: DV_NOPE}}",
     "the environment variable DV_NOPE (password_env) is not set"),
    ("channels: {x: {type: webhook, url: 'http://h'}}\n"
     "rules: [{name: a, events: [failed], channels: [x], quiet_hours: '22-6'}]", "quiet_hours: '22' is not a time"),
    ("channels: {x: {type: webhook, url: 'http://h'}}\n"
     "rules: [{name: a, events: [failed], channels: [x], rate_limit: lots}]", "rate_limit must be COUNT/"),
    ("channels: {x: {type: webhook, url: 'http://h'}}\n"
     "rules: [{name: a, events: [failed], channels: [x], timezone: Mars/Olympus}]", "unknown timezone 'Mars/Olympus'"),
])
def test_a_rules_file_that_cannot_be_used_is_one_line_naming_the_file_and_the_cause(tmp_path, text, cause):
    from jobs.notify.rules import RulesError, load_rules

    path = tmp_path / "notifications.yml"
    path.write_text(text)
    with pytest.raises(RulesError) as error:
        load_rules(path, env={})
    assert str(error.value).startswith(f"{path}: ") and cause in str(error.value) and "\n" not in str(error.value)


@pytest.fixture(scope="module")
def dv(tmp_path_factory, redis_server):
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult
    from redis import Redis

    from lab.generate_inventory import generate_inventory
    from lab.testing import start_lab, stop_lab
    from tests.conftest import DeviceVault

    home = tmp_path_factory.mktemp("notify")
    inventory = home / "inventory"
    hosts = generate_inventory(count=2, out=inventory, port=free_port(), base="127.0.71.0", platforms=["ios", "eos"])
    keeper = next(h for h in hosts if "eos" in h)  # its stored texts keep the secrets: the diff masks them
    (inventory / "host_vars").mkdir()
    (inventory / "host_vars" / f"{keeper}.yml").write_text("devicevault_secrets: keep\n")
    redis_url = redis_server.url.rsplit("/", 1)[0] + "/1"
    Redis.from_url(redis_url).flushdb()
    receiver = Receiver(free_port(), HOOK_SECRET).start()
    mailbox = Mailbox()
    cert, key = _certificate(home)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)

    def login(server, session, envelope, mechanism, auth_data):
        return AuthResult(success=auth_data.login == b"devicevault" and auth_data.password == SMTP_PASSWORD.encode())

    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port(), tls_context=tls, require_starttls=True,
                      auth_required=True, authenticator=login)
    smtp.start()
    rules = home / "notifications.yml"
    (home / "compliance.yml").write_text(
        "rules:\n  - name: password-encryption\n    platforms: [ios]\n"
        "    must_contain: [service password-encryption]\n")
    rules.write_text(f"""
sweep_interval: 1
digest_delay: 2
channels:
  hook: {{type: webhook, url: "http://127.0.0.1:{receiver.port}/hook", secret_env: DV_TEST_HOOK_SECRET,
          retry_base: 0.5, retry_max: 1, max_tries: 100}}
  mail: {{type: email, host: 127.0.0.1, port: {smtp.port}, starttls: true, ca_file: "{cert}",
          username: devicevault, password_env: DV_TEST_SMTP_PASSWORD, from: devicevault@example.com,
          to: [neteng@example.com], retry_base: 0.5}}
  digest-mail: {{type: email, host: 127.0.0.1, port: {smtp.port}, starttls: true, ca_file: "{cert}",
          username: devicevault, password_env: DV_TEST_SMTP_PASSWORD, from: devicevault@example.com,
          to: [digest@example.com], digest: true}}
  broken: {{type: webhook, url: "http://127.0.0.1:{free_port()}/nobody", max_tries: 2, retry_base: 0.2}}
  slack: {{type: slack, url_env: DV_TEST_SLACK_URL, retry_base: 0.5, retry_max: 1}}
  teams: {{type: teams, url: "http://127.0.0.1:{receiver.port}/teams", retry_base: 0.5, retry_max: 1}}
rules:
  - name: changes
    events: [version, failed, recovered]
    channels: [hook, mail]
  - name: health
    events: [stale, unsaved, compliance, dead_letter]
    channels: [hook]
  - name: digest
    events: [version, failed, recovered, run_finished]
    channels: [digest-mail]
  - name: chat
    events: [run_finished, compliance]
    channels: [slack, teams]
  - name: runs
    events: [run_finished]
    channels: [broken]
""")
    env = {
        "DEVICEVAULT_HOME": str(home),
        "DEVICEVAULT_REDIS_URL": redis_url,
        "DEVICEVAULT_INVENTORY": str(inventory),
        "DEVICEVAULT_DEVICE_TIMEOUT": "5",
        "DEVICEVAULT_JOB_TIMEOUT": "60",
        "DEVICEVAULT_LOCK_MARGIN": "10",
        "DEVICEVAULT_COLLECT_RETRIES": "0",
        # kept secrets need encrypted targets
        "DEVICEVAULT_ENCRYPTION_KEYS": "k1:" + base64.b64encode(hashlib.sha256(b"notify test key").digest()).decode(),
        "DEVICEVAULT_GIT_ENCRYPT": "true",
        "DEVICEVAULT_FS_ENCRYPT": "true",
        "DV_TEST_HOOK_SECRET": HOOK_SECRET,
        "DV_TEST_SMTP_PASSWORD": SMTP_PASSWORD,
        "DV_TEST_SLACK_URL": f"http://127.0.0.1:{receiver.port}/slack",
    }
    tool = DeviceVault(env, home)
    tool.keeper = keeper
    tool.hosts, tool.receiver, tool.mailbox, tool.redis = hosts, receiver, mailbox, Redis.from_url(redis_url)
    start_lab(inventory, home / "lab")
    processes = [
        tool.process("worker", "--queue", "collector", "--queue", "storage.git", "--queue", "storage.fs",
                     "--name", f"notify-worker-{free_port()}", name="worker"),
        tool.process("consumer", "--name", "indexer-notify", "--claim-idle", "1", name="consumer"),
        tool.process("notifier", "--name", "notifier-test", "--claim-idle", "1", name="notifier"),
    ]
    for proc in processes:
        proc.start()
    try:
        tool("backup", "--wait")  # first versions: not notified (first_versions is off)
        yield tool
    finally:
        with ThreadPoolExecutor(len(processes)) as pool:  # they stop together, not one after another
            list(pool.map(lambda proc: proc.stop(), processes))
        stop_lab(home / "lab")
        smtp.stop()
        receiver.stop()


def _settled(dv) -> bool:
    """The notifier has handled every message of its streams and nothing is due."""
    from jobs.notify.notifier import STREAMS
    from jobs.notify.queue import DUE
    from jobs.streams.group import stream_status

    rows = [r for r in stream_status(dv.redis, STREAMS) if r["group"] == "notifier"]
    return (len(rows) == len(STREAMS) and all(r["pending"] == 0 and r["lag"] == 0 for r in rows)
            and dv.redis.zcard(DUE) == 0)


def _cli(dv, *args: str):
    """``devicevault ARGS`` in this process (click's runner, the module's environment): a backup or a look at
    the queue without a new interpreter each time."""
    from click.testing import CliRunner

    from cli.main import main

    return CliRunner(env=dv.env).invoke(main, list(args), catch_exceptions=False)


def _backup(dv, *hosts: str) -> None:
    args = [a for h in hosts for a in ("--host", h)]
    result = _cli(dv, "backup", "--wait", *args)
    assert result.exit_code in (0, 1), result.output


def test_a_change_on_two_devices_sends_two_signed_webhooks_and_two_mails_with_the_diff(dv):
    from lab.control import LabControl

    assert dv.receiver.events("version") == [] and dv.mailbox.versions() == []  # first versions: not notified
    lab = LabControl(dv.home / "lab")
    changed = dv.hosts
    added = {host: lab.change(host) for host in changed}
    _backup(dv)
    wait_for(lambda: len(dv.receiver.events("version")) >= 2 and len(dv.mailbox.versions()) >= 2,
             "two webhook deliveries and two mails", timeout=60)
    wait_for(lambda: _settled(dv), "the notifier to settle")
    hooks = dv.receiver.events("version")
    assert sorted(h["device"] for h in hooks) == sorted(changed)
    assert dv.receiver.bad == []  # every body carried a valid signature
    for hook in hooks:
        assert hook["diff"].startswith(f"--- {hook['device']} v1\n+++ {hook['device']} v2\n"), hook["diff"]
        assert hook["data"]["number"] == 2
        lines = hook["diff"].splitlines()[2:]
        assert [line[1:] for line in lines if line.startswith("+")] == added[hook["device"]], hook["diff"]
        assert not [line for line in lines if line.startswith("-")], hook["diff"]
    from sqlalchemy import select

    from storage.index.db import connect
    from storage.index.models import Device, Version

    with connect(dv.settings.database_url)() as session:  # the keeper's stored texts do hold its secrets
        kept = session.scalars(select(Version).join(Device).where(Device.name == dv.keeper)).all()
        assert kept and all(v.view_sha256 != v.sha256 for v in kept)
    secrets = [line.split()[-1] for line in lab.running_config(dv.keeper).splitlines() if " sha512 " in line]
    assert secrets and not [s for s in secrets if any(s in json.dumps(b) for _, b in dv.receiver.got)]
    mails = dv.mailbox.versions()
    assert not [s for s in secrets if any(s in m.as_string() for m in dv.mailbox.messages)]
    assert sorted(next(h for h in changed if h in m["Subject"]) for m in mails) == sorted(changed)
    for mail in mails:
        body = mail.get_payload(decode=True).decode()
        device = next(h for h in changed if h in mail["Subject"])
        assert f"+++ {device} v2" in body and "\n@@ " in body, body
        assert mail["To"] == "neteng@example.com"
    run_id = hooks[0]["run_id"]
    digest = wait_for(lambda: dv.mailbox.digests(run_id), "the run's digest mail")
    wait_for(lambda: _settled(dv), "the notifier to settle")
    assert len(dv.mailbox.digests(run_id)) == 1
    body = digest[0].get_payload(decode=True).decode()
    assert body.startswith(f"run {run_id} finished: 2 changed"), body
    assert all(f"+++ {device} v2" in body for device in changed), body
    chat = [(path, b) for path, b in dv.receiver.chat if run_id in json.dumps(b)]
    slack = [b for path, b in chat if path == "/slack"]
    teams = [b for path, b in chat if path == "/teams"]
    assert len(slack) == len(teams) == 1, chat
    assert slack[0]["text"].startswith(f"run {run_id} finished: 2 changed")
    card = teams[0]["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["body"][0]["text"] == f"run {run_id} finished: 2 changed"


def test_a_receiver_down_during_three_failed_runs_gets_one_failure_one_recovery_and_every_change_once(dv):
    """While the receiver is down a device fails three runs in a row and another one changes; once the
    receiver is back it gets each notification once: one failure, one recovery, the change."""
    from lab.control import LabControl

    from jobs.notify.queue import RETRYING

    failing, changing = dv.hosts
    lab = LabControl(dv.home / "lab")
    before = len(dv.receiver.got)
    dv.receiver.stop()
    lab.set_fault(failing, "auth_fail")
    try:
        lab.change(changing)
        _backup(dv, failing, changing)
        wait_for(lambda: dv.redis.zcard(RETRYING) >= 2, "failed deliveries to the receiver that is down")
        failures = json.loads(_cli(dv, "notify", "failures", "--json").stdout)
        assert any(f["channel"] == "hook" and f["status"] == "retrying" and "cannot be reached" in f["error"]
                   for f in failures["failures"]), failures
        _backup(dv, failing)
        assert len(dv.receiver.got) == before
        dv.receiver.start()
        _backup(dv, failing)
    finally:
        lab.set_fault(failing, "none")
    _backup(dv, failing)
    third = lambda: [e for e in dv.receiver.events("version", changing) if e["data"]["number"] == 3]  # noqa: E731
    wait_for(lambda: dv.receiver.events("recovered", failing) and third(), "the notifications once the receiver is back")
    wait_for(lambda: _settled(dv), "the notifier to settle")
    failed = dv.receiver.events("failed", failing)
    assert len(failed) == 1, failed
    assert "authentication failed" in failed[0]["data"]["error"] and failed[0]["title"] == f"{failing}: backup failed"
    assert len(dv.receiver.events("recovered", failing)) == 1
    assert len(third()) == 1 and len(dv.mailbox.versions(changing)) == 2
    mails = [m for m in dv.mailbox.messages if m["Subject"] == f"[DeviceVault] {failing}: backup failed"]
    assert len(mails) == 1
    deliveries = Counter(key for key, _ in dv.receiver.got)
    assert all(n == 1 for n in deliveries.values()), deliveries


def test_a_device_that_loses_a_required_line_raises_a_compliance_notification(dv):
    from lab.control import LabControl

    ios = next(h for h in dv.hosts if "ios" in h)
    assert dv.receiver.events("compliance") == []  # every device complied so far
    assert LabControl(dv.home / "lab").remove_lines(ios, r"^service password-encryption$")
    _backup(dv, ios)
    hook = wait_for(lambda: dv.receiver.events("compliance", ios), "the violation notification")
    assert hook[0]["data"]["rule"] == "password-encryption" and hook[0]["data"]["state"] == "violated"
    assert "service password-encryption" in hook[0]["text"]
    wait_for(lambda: any(path == "/slack" and "compliance rule password-encryption" in b["text"]
                         for path, b in dv.receiver.chat), "the violation on Slack")


def test_stale_and_unsaved_devices_and_dead_letters_are_notified_once(dv):
    """Asked of the index's health words and the dead-letter streams by the notifier's sweep."""
    from datetime import datetime, timedelta, timezone

    from jobs.ops.freshness import mark_stale
    from jobs.streams.events import VERSIONS_CREATED_STREAM
    from storage.index.db import connect

    sessions = connect(dv.settings.database_url)
    later = datetime.now(timezone.utc) + timedelta(days=30)
    assert {s.device for s in mark_stale(sessions, dv.settings, None, now=later)} == set(dv.hosts)
    try:
        wait_for(lambda: {e["device"] for e in dv.receiver.events("stale")} == set(dv.hosts), "stale notifications")
    finally:
        mark_stale(sessions, dv.settings, None)  # fresh again
    unsaved = wait_for(lambda: dv.receiver.events("unsaved"), "unsaved notifications")  # the lab's changes are unsaved
    assert {e["device"] for e in unsaved} <= set(dv.hosts)
    dv.redis.xadd(VERSIONS_CREATED_STREAM, {"version_id": "not-a-number", "device": "nowhere"})
    dead = wait_for(lambda: [e for e in dv.receiver.events("dead_letter") if e["data"]["stream"] == VERSIONS_CREATED_STREAM],
                    "the dead letter notification")
    assert "malformed" in dead[0]["text"]
    wait_for(lambda: _settled(dv), "the notifier to settle")
    stale = Counter(e["device"] for e in dv.receiver.events("stale"))
    assert stale == Counter(dv.hosts)  # once per incident, though every sweep sees them
    assert len(dv.receiver.events("unsaved")) == len(unsaved)


def test_status_shows_dead_deliveries_and_notify_test_sends_a_sample(dv):
    from jobs.notify import queue

    def settled() -> bool:  # the last run's summary to 'broken' may still be between its two tries
        waiting = [k.decode() for zset in (queue.DUE, queue.RETRYING) for k in dv.redis.zrange(zset, 0, -1)]
        return not any(queue.channel_of(k) == "broken" for k in waiting)

    wait_for(settled, "every delivery to the broken channel to be dead")
    status = json.loads(_cli(dv, "status", "--json").stdout)
    notes = status["notifications"]
    assert notes["dead"] >= 1, notes  # the run summaries to a receiver nobody runs: dead after 2 tries
    dead = [f for f in notes["failures"] if f["status"] == "dead"]
    assert dead and all(f["channel"] == "broken" and f["tries"] == 2 for f in dead), dead
    retried = _cli(dv, "notify", "retry", dead[0]["key"])
    assert retried.exit_code == 0 and "1 delivery(ies) queued again" in retried.stdout
    wait_for(lambda: json.loads(_cli(dv, "notify", "failures", "--json").stdout)["dead"] == notes["dead"],
             "the retried delivery to die again (its receiver is still not there)")
    assert _cli(dv, "notify", "retry", "no-such-key").exit_code == 1
    text = _cli(dv, "status").stdout
    assert "== notifications (deliveries):" in text and f"{notes['dead']} dead" in text
    sent = _cli(dv, "notify", "test", "changes")
    assert sent.exit_code == 0 and "hook: sent" in sent.stdout and "mail: sent" in sent.stdout, sent.output
    assert any(b["data"].get("sample") for _, b in dv.receiver.got)
    broken = _cli(dv, "notify", "test", "runs")
    assert broken.exit_code == 1 and "broken: failed" in broken.stderr and "cannot be reached" in broken.stderr
    unknown = _cli(dv, "notify", "test", "nope")
    assert unknown.exit_code == 1 and "no rule 'nope'" in unknown.stderr


def test_secrets_never_leave_and_a_broken_rules_file_is_one_line(dv):
    from tests.conftest import redis_blobs

    for log in (dv.home / "logs").glob("*.log"):
        text = log.read_text(errors="replace")
        assert HOOK_SECRET not in text and SMTP_PASSWORD not in text, log
    blobs = redis_blobs(dv.env["DEVICEVAULT_REDIS_URL"])
    assert not any(HOOK_SECRET.encode() in b or SMTP_PASSWORD.encode() in b for b in blobs)
    bad = dv.home / "bad-notifications.yml"
    bad.write_text("channels:\n  hook: {type: webhook, url_env: DV_NOT_SET}\nrules: []\n")
    proc = subprocess_env(dv, {"DEVICEVAULT_NOTIFICATIONS": str(bad)}, "notifier", "--idle-exit", "1")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "DV_NOT_SET" in lines[0] and "is not set" in lines[0], proc.stderr


def subprocess_env(dv, extra: dict[str, str], *args: str):
    from tests.conftest import DeviceVault

    return DeviceVault({**dv.env, **extra}, dv.home)(*args, check=False)
