"""Device answers judged by their content (issue 14, item 6).

The platform files' ``expect`` data against every golden output and an unlisted error text; then the real
pipeline (lab, redis-server, a worker, the consumer, ``devicevault backup --wait``) with the lab's
``answer`` fault: every backup command answered with an error text no platform file lists fails at once
(one attempt, the device's words in the error), a rejected ``show version`` gives a version and a warning,
an empty startup configuration leaves "unsaved" unknown, and an empty reply is "no configuration".
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cli.services import free_port
from jobs.collect.platforms import all_platforms, loader

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
UNLISTED = "No such command : {command}"
RETRY_BASE = 40  # a transient failure would wait this long before its next attempt


# --- the data ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(all_platforms()))
def test_every_golden_answer_is_judged_a_real_answer(name):
    platform = all_platforms()[name]
    outputs = [p.read_text() for p in sorted((GOLDEN / name / "raw").glob("*.txt"))]
    main, startup = platform.split_outputs(outputs)
    for command, output in zip(platform.commands, main):
        assert loader.judge_answer(platform, output, command.expected)[0] == loader.ANSWER_OK, command.command
    if startup is not None:
        assert loader.judge_answer(platform, startup, platform.startup_expected)[0] == loader.ANSWER_OK


@pytest.mark.parametrize("name", sorted(all_platforms()))
def test_an_unlisted_error_is_not_a_configuration_on_any_platform(name):
    platform = all_platforms()[name]
    for command in platform.commands:
        if command.expected:
            text = UNLISTED.format(command=command.command)
            assert loader.judge_answer(platform, text, command.expected) == (loader.ANSWER_UNEXPECTED, text)
            assert loader.judge_answer(platform, "", command.expected) == (loader.ANSWER_EMPTY, "")
    assert any(c.expect for c in platform.commands if not c.comment), "no configuration command has expect"


def test_an_empty_or_rejected_startup_configuration_is_unknown_not_unsaved():
    from jobs.collect.answers import check_answers
    from jobs.collect.normalize import normalize

    platform = all_platforms()["ios"]
    version, running, startup = [p.read_text() for p in sorted((GOLDEN / "ios" / "raw").glob("*.txt"))]
    assert normalize("r1", platform, check_answers("r1", platform, [version, running, startup]).outputs).unsaved is False
    for answer in ("", "\n\n", "No such command : show startup-config", "% Invalid input detected at '^' marker."):
        judged = check_answers("r1", platform, [version, running, answer])
        assert normalize("r1", platform, judged.outputs).unsaved is None, answer
        assert judged.warnings == []


def test_the_quoted_device_line_is_one_escaped_line():
    from jobs.collect.answers import check_answers
    from jobs.errors import CommandRejected

    platform = all_platforms()["ios"]
    version, running, startup = [p.read_text() for p in sorted((GOLDEN / "ios" / "raw").glob("*.txt"))]
    with pytest.raises(CommandRejected) as caught:
        check_answers("r1", platform, [version, "\x1b]0;title\x07\u202eevil " + "x" * 500, startup])
    message = str(caught.value)
    assert "\x1b" not in message and "\u202e" not in message and "\n" not in message
    assert "'\\x1b]0;title\\x07\\u202eevil xxx" in message and len(message) < 400


# --- through the pipeline ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dv(tmp_path_factory, redis_server):
    """A lab of ios, eos and junos devices (127.0.120.x), a worker and the consumer."""
    from lab.testing import running_lab

    from tests.conftest import DeviceVault

    home = tmp_path_factory.mktemp("answers")
    with running_lab(count=6, base="127.0.120.0", workdir=home / "lab", platforms=["ios", "eos", "junos"]) as lab:
        tool = DeviceVault({
            "DEVICEVAULT_HOME": str(home),
            "DEVICEVAULT_REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/9",
            "DEVICEVAULT_INVENTORY": str(lab.inventory),
            "DEVICEVAULT_DEVICE_TIMEOUT": "20",
            "DEVICEVAULT_COLLECT_RETRIES": "2",  # as by default: a transient failure would be tried 3 times
            "DEVICEVAULT_COLLECT_RETRY_BASE": str(RETRY_BASE),
        }, home)
        tool.lab = lab
        procs = [tool.process("worker", "--name", f"answers-w-{free_port()}", name="worker").start(),
                 tool.process("consumer", "--name", "answers-indexer", name="consumer").start()]
        yield tool
        for p in procs:
            p.stop()


def _backup(dv, host: str) -> tuple[dict, float]:
    started = time.monotonic()
    proc = dv("backup", "--host", host, "--wait", "--json", "--timeout", "300", check=False)
    assert proc.returncode in (0, 1), proc.stderr
    rows = {r["device"]: r for r in json.loads(proc.stdout)["results"]}
    return rows[host], time.monotonic() - started


def _host(dv, platform: str, n: int = 1) -> str:
    return [h for h in dv.lab.hosts if f"-{platform}-" in h][n - 1]


def test_every_command_answered_with_an_unlisted_error_fails_at_once_quoting_it(dv):
    host = _host(dv, "ios")
    dv.lab.control.set_fault(host, "answer", text=UNLISTED)
    try:
        result, took = _backup(dv, host)
    finally:
        dv.lab.control.set_fault(host, "none")
    assert result["status"] == "failed", result
    assert "No such command : show running-config" in result["error"], result["error"]
    assert result["error"].startswith(f"{host}: command rejected") and "(permanent: not retried)" in result["error"]
    assert "transient" not in result["error"]
    assert took < RETRY_BASE, f"took {took:.0f}s: it waited for a retry"
    logs = "".join(p.read_text(errors="replace") for p in (dv.home / "logs").glob("worker*.log"))
    assert "No such command : show running-config" in logs
    retries = [line for line in logs.splitlines() if "retrying" in line and host in line]
    assert not retries, retries
    print(f"\nunlisted error text on every command: attempts {1 + len(retries)}, failed in {took:.1f} s "
          f"(retry base {RETRY_BASE} s): {result['error']}")


def test_an_empty_reply_is_no_configuration(dv):
    host = _host(dv, "junos")
    dv.lab.control.set_fault(host, "answer", text="")
    try:
        result, took = _backup(dv, host)
    finally:
        dv.lab.control.set_fault(host, "none")
    assert result["status"] == "failed" and "(permanent: not retried)" in result["error"], result
    assert "no configuration: the device answered 'show configuration | no-more' with nothing" in result["error"]
    assert took < RETRY_BASE


def test_a_rejected_show_version_gives_a_version_without_header_and_a_warning(dv):
    host = _host(dv, "ios", 2)
    dv.lab.control.set_fault(host, "answer", commands="show version", text="No such command : {command}")
    try:
        result, _ = _backup(dv, host)
    finally:
        dv.lab.control.set_fault(host, "none")
    assert result["status"] == "changed", result
    assert "warning" in result["error"] and "No such command : show version" in result["error"], result
    text = dv("show", host, "-1").stdout
    assert "hostname " in text and not text.startswith("! Cisco IOS")
    print(f"\nshow version rejected: status {result['status']}, version {len(dv.json('versions', host))} stored "
          f"without the identity header; warning: {result['error']}")
    # the identity header is back once show version answers again
    result, _ = _backup(dv, host)
    assert result["status"] == "changed" and not result["error"]
    assert dv("show", host, "-1").stdout.startswith("! Cisco IOS")


def test_an_empty_startup_configuration_is_unknown_not_unsaved(dv):
    flagged, unknown = _host(dv, "eos"), _host(dv, "eos", 2)
    for host in (flagged, unknown):
        dv.lab.control.change(host)  # running now differs from startup
    dv.lab.control.set_fault(unknown, "answer", commands="show startup-config", text="")
    try:
        assert _backup(dv, flagged)[0]["status"] == "changed"
        result, _ = _backup(dv, unknown)
    finally:
        dv.lab.control.set_fault(unknown, "none")
    assert result["status"] == "changed" and not result["error"], result
    devices = {d["name"]: d for d in dv.json("devices")}
    assert devices[flagged]["unsaved"] is True
    assert not devices[unknown]["unsaved"]
    assert unknown not in {d["name"] for d in dv.json("devices", "--unsaved")}
