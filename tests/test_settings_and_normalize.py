"""Settings precedence and redaction; normalisation rules from the platform data files."""

from __future__ import annotations

import pytest

from jobs.errors import CommandRejected, DeviceTimeout, IncompleteOutput, InventoryError
from jobs.collect.fetch import classify
from jobs.collect.inventory import load_inventory
from jobs.collect.normalize import normalize
from jobs.collect.platforms import all_platforms, get_platform
from jobs.redact import Redactor
from jobs.settings import Settings, SettingsError

IOS_RAW = """Building configuration...

Current configuration : 1234 bytes
!
! Last configuration change at 10:01:02 UTC Sun Nov 22 2026 by admin
! NVRAM config last updated at 10:01:03 UTC Sun Nov 22 2026 by admin
!
hostname r1
ntp clock-period 17179869
interface Gi0/1
 description uplink
end
"""


def test_settings_precedence_explicit_then_env_then_default(tmp_path):
    env = {"DEVICEVAULT_HOME": str(tmp_path), "DEVICEVAULT_DEVICE_TIMEOUT": "12", "DEVICEVAULT_TARGETS": "fs"}
    s = Settings.load(env=env, device_timeout=7)
    assert s.device_timeout == 7  # explicit wins
    assert s.targets == ("fs",)  # then the environment
    assert s.batch_size == 50  # then the default
    assert s.database_url == f"sqlite:///{tmp_path / 'index.sqlite'}"
    assert s.lock_ttl == s.job_timeout + s.lock_margin

@pytest.mark.parametrize("variable", ["DEVICEVAULT_BATCH_SIZE", "DEVICEVAULT_FORKS"])
@pytest.mark.parametrize("value", ["0", "-3", "ten", "2.5", " "])
def test_batch_size_and_forks_must_be_whole_numbers_of_at_least_one(tmp_path, variable, value):
    from jobs.errors import BackupError

    with pytest.raises(SettingsError) as caught:
        Settings.load(env={"DEVICEVAULT_HOME": str(tmp_path), variable: value})
    assert str(caught.value) == f"{variable}={value!r}: must be a whole number of at least 1"
    assert isinstance(caught.value, BackupError)  # the CLI prints it as one line


def test_batch_size_and_forks_from_the_environment(tmp_path):
    s = Settings.load(env={"DEVICEVAULT_HOME": str(tmp_path), "DEVICEVAULT_BATCH_SIZE": "1",
                           "DEVICEVAULT_FORKS": " 7 "})
    assert (s.batch_size, s.forks) == (1, 7)
    with pytest.raises(SettingsError, match="DEVICEVAULT_BATCH_SIZE=0"):  # an explicit value is checked too
        Settings.load(env={"DEVICEVAULT_HOME": str(tmp_path)}, batch_size=0)


SHOW_VERSION = "Cisco IOS XE Software, Version 17.9.4a\nrouter uptime is 3 days, 2 hours, 1 minute\n"


def test_settings_repr_hides_passwords(tmp_path):
    s = Settings.load(env={"DEVICEVAULT_HOME": str(tmp_path)}, redis_url="redis://:s3cr3t-pw@10.0.0.1:6379/0",
                      database_url="postgresql://dv:db-pass-1@db/dv")
    text = repr(s)
    assert "s3cr3t-pw" not in text and "db-pass-1" not in text and "REDACTED" in text


def test_ios_volatile_lines_removed_and_config_kept():
    text = normalize("r1", get_platform("cisco.ios.ios"), [SHOW_VERSION, IOS_RAW]).text
    assert "Last configuration change" not in text and "NVRAM" not in text and "17179869" not in text
    assert "Building configuration" not in text and "Current configuration" not in text
    assert " description uplink" in text and text.rstrip().endswith("end")


def test_two_reads_differing_only_in_volatile_lines_normalise_equal():
    later = IOS_RAW.replace("10:01:02", "23:59:59").replace("17179869", "17180001").replace("1234 bytes", "1240 bytes")
    ios = get_platform("cisco.ios.ios")
    assert normalize("r1", ios, [SHOW_VERSION, IOS_RAW]).text == normalize("r1", ios, [SHOW_VERSION, later]).text


def test_error_text_is_refused_not_stored():
    with pytest.raises(CommandRejected, match="^r1: .*Invalid input"):
        normalize("r1", get_platform("cisco.ios.ios"), [SHOW_VERSION, "show running-config\n% Invalid input detected at '^' marker."])


def test_truncated_output_is_refused():
    with pytest.raises(IncompleteOutput, match="^r1: "):
        normalize("r1", get_platform("cisco.ios.ios"), [SHOW_VERSION, IOS_RAW.split("interface")[0]])


def test_non_utf8_output_survives():
    raw = IOS_RAW.replace("uplink", "caf\udce9")  # a latin-1 byte kept as a surrogate escape
    assert "caf\udce9" in normalize("r1", get_platform("cisco.ios.ios"), [SHOW_VERSION, raw]).text


@pytest.mark.parametrize("name", ["ios", "eos", "nxos", "junos", "routeros"])
def test_every_lab_platform_has_a_data_file(name):
    platform = all_platforms()[name]
    assert platform.commands and platform.noise and platform.complete


def test_ansible_failures_are_classified_and_name_the_device():
    err = classify("sw-9", "command timeout triggered, timeout value is 10 secs.")
    assert isinstance(err, DeviceTimeout) and isinstance(err, TimeoutError) and str(err).startswith("sw-9: ")


def test_redactor_masks_known_and_generic_secrets():
    r = Redactor(["hunter22"])
    out = r.redact("login hunter22 failed; ansible_password=abc123 redis://u:pw99@h")
    assert "hunter22" not in out and "abc123" not in out and "pw99" not in out


def test_malformed_inventory_error_names_the_file(tmp_path):
    bad = tmp_path / "hosts.yml"
    bad.write_text("all:\n  hosts: [oops\n")
    with pytest.raises(InventoryError, match="hosts.yml"):
        load_inventory(bad)
    with pytest.raises(InventoryError, match="not found"):
        load_inventory(tmp_path / "missing")


def test_backend_settings_come_from_the_backend_types_variables(tmp_path):
    """Each storage backend type declares its variables (storage/registry.py); the README's names still hold."""
    env = {"DEVICEVAULT_HOME": str(tmp_path), "DEVICEVAULT_GIT_BRANCH": "backups", "DEVICEVAULT_S3_BUCKET": "net",
           "DEVICEVAULT_S3_REGION": "auto", "DEVICEVAULT_S3_SECRET_ACCESS_KEY": "s3-secret-key-1",
           "DEVICEVAULT_S3_ACCESS_KEY_ID": "AKIA0000", "DEVICEVAULT_S3_ENDPOINT_URL": "http://127.0.0.1:9"}
    s = Settings.load(env=env, fs_root=tmp_path / "elsewhere")
    assert (s.git_repo, s.git_branch, s.fs_root) == (tmp_path / "git", "backups", tmp_path / "elsewhere")
    assert (s.s3_bucket, s.s3_prefix, s.s3_region) == ("net", "", "auto")
    assert s.backend_options("git") == {"repo_path": str(tmp_path / "git"), "branch": "backups"}
    assert s.backend_options("fs") == {"root": str(tmp_path / "elsewhere")}
    assert s.backend_options("s3") == {
        "bucket": "net", "endpoint_url": "http://127.0.0.1:9", "region_name": "auto", "access_key_id": "AKIA0000",
        "secret_access_key": "s3-secret-key-1", "create_bucket": True}
    assert "s3-secret-key-1" not in repr(s) and "s3_secret_access_key='REDACTED'" in repr(s)
    assert "s3-secret-key-1" in s.secrets()
    with pytest.raises(AttributeError):
        s.tape_root  # noqa: B018 - no such backend type


def test_a_registered_backend_type_brings_its_own_variables(tmp_path):
    from storage.registry import Setting, register, unregister

    register("tape", dict, settings=[Setting("drive", "DRIVE", lambda home: home / "tape", path=True),
                                     Setting("token", "TOKEN", secret=True)], keep_last=5)
    try:
        s = Settings.load(env={"DEVICEVAULT_HOME": str(tmp_path), "DEVICEVAULT_TAPE_TOKEN": "tape-token-99"})
        assert s.tape_drive == tmp_path / "tape"
        assert s.backend_options("tape") == {"drive": str(tmp_path / "tape"), "token": "tape-token-99"}
        assert "tape-token-99" not in repr(s) and "tape-token-99" in s.secrets()
    finally:
        unregister("tape")
