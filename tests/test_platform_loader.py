"""The one platform-file loader (the collection's ``plugins/plugin_utils/platform_file.py``): its shared rules
(which file a host uses, where files are looked for, command order) and its checks of malformed files.

The loader runs inside Ansible's processes too (collect action, cli cliconf/terminal plugins), where
DeviceVault's packages are not importable: it may import only the standard library and PyYAML.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from jobs.collect import platforms
from jobs.collect.normalize import normalize
from jobs.collect.platforms import BUILTIN_DIR, PlatformError, all_platforms, get_platform, platform_name, search_dirs

MINIMAL = "name: {name}\nnetwork_os: devicevault.network.cli\ncommands: [show config]\n"


def test_the_loader_imports_only_the_standard_library_and_yaml():
    source = Path(platforms.loader.__file__)
    assert source.parent.name == "plugin_utils" and "ansible_collections" in source.parts
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"__future__", "os", "re", "dataclasses", "yaml"}, imported


def test_built_in_platform_files_live_in_the_collection():
    assert BUILTIN_DIR.parent.name == "network" and BUILTIN_DIR.parent.parent.name == "devicevault"
    assert (BUILTIN_DIR / "ios.yml").is_file() and (BUILTIN_DIR / "README.md").is_file()
    assert set(all_platforms()) >= {"ios", "asa", "fortios", "junos"}


@pytest.mark.parametrize("platform,network_os,expected", [
    ("asa", "devicevault.network.cli", "asa"),      # devicevault_platform wins
    ("", "cisco.ios.ios", "ios"),                   # else the last part of ansible_network_os
    (None, "ios", "ios"),
    ("  ", "arista.eos.eos", "eos"),
    ("", "devicevault.network.cli", ""),            # our own plugin names no platform by itself
    ("", "", ""),
    (None, None, ""),
])
def test_platform_name(platform, network_os, expected):
    assert platform_name(platform, network_os) == expected


def test_startup_goes_last_and_split_outputs_reads_it_back():
    ios = get_platform("cisco.ios.ios")
    assert ios.command_lines == ("show version", "show running-config", "show startup-config")
    assert ios.config_commands == ("show running-config",)
    assert ios.split_outputs(["v", "run", "start"]) == (["v", "run"], "start")
    assert ios.split_outputs(["v", "run"]) == (["v", "run"], None)
    junos = get_platform("junos")
    assert not junos.startup and junos.split_outputs(["a", "b", "c"]) == (["a", "b"], None)


def test_a_site_directory_is_searched_first_and_overrides(tmp_path, monkeypatch):
    (tmp_path / "site-os.yml").write_text(MINIMAL.format(name="site-os"))
    (tmp_path / "ios.yml").write_text(MINIMAL.format(name="ios").replace("show config", "show site config"))
    monkeypatch.delenv("DEVICEVAULT_PLATFORMS_DIR", raising=False)
    assert get_platform("site-os") is None
    assert search_dirs() == [str(BUILTIN_DIR)]
    monkeypatch.setenv("DEVICEVAULT_PLATFORMS_DIR", str(tmp_path))
    assert search_dirs() == [str(tmp_path), str(BUILTIN_DIR)]
    assert get_platform("site-os").command_lines == ("show config",)
    assert get_platform("ios").command_lines == ("show site config",)
    assert all_platforms()["ios"].command_lines == ("show site config",) and "asa" in all_platforms()
    # an explicit directory (devicevault_platforms_dir) comes before the environment
    other = tmp_path / "other"
    other.mkdir()
    assert search_dirs(str(other)) == [str(other), str(BUILTIN_DIR)]
    assert get_platform("site-os", other) is None and get_platform("ios", other).startup


def test_a_changed_file_is_read_again(tmp_path):
    path = tmp_path / "acme.yml"
    path.write_text(MINIMAL.format(name="acme"))
    assert get_platform("acme", tmp_path).command_lines == ("show config",)
    path.write_text(MINIMAL.format(name="acme").replace("[show config]", "[show config, show more]"))
    assert get_platform("acme", tmp_path).command_lines == ("show config", "show more")


@pytest.mark.parametrize("text,message", [
    ("name: x\ncommands: []\n", "needs 'name', 'network_os' and a list of 'commands'"),
    ("commands: [{command: show version, comment: true}]\n", "at least one command must be the configuration"),
    ("commands: [show run]\nnoise: ['(unclosed']\n", "bad regular expression in 'noise'"),
    ("commands: [show run]\nsecrets: ['^enable secret \\S+']\n", "needs a group named 'secret'"),
    ("commands: [show run]\nreplace: [{pattern: x}]\n", "needs 'pattern' and 'with'"),
    ("commands: [show run]\nterminal: {paging: [x]}\n", "'terminal' must be a mapping with 'prompts'"),
    ("commands: [show run]\nterminal: {prompts: ['>$'], privilege: {command: enable}}\n",
     "terminal.privilege needs 'command', 'prompt' and 'check'"),
    ("commands: [show run]\n: : :\n", "cannot read platform file"),
])
def test_malformed_files_are_refused_naming_the_file(tmp_path, text, message):
    (tmp_path / "bad.yml").write_text(text)
    with pytest.raises(PlatformError) as exc:
        get_platform("bad", tmp_path)
    assert message in str(exc.value) and "bad.yml" in str(exc.value)


def test_terminal_section_is_compiled_for_network_cli():
    asa = get_platform("asa")
    assert asa.terminal is not None and asa.terminal.paging == ("terminal pager 0",)
    assert any(p.search(b"\nfw-01# ") for p in asa.terminal.prompts)   # bytes, as network_cli reads them
    assert asa.terminal.privilege.command == "enable" and asa.terminal.privilege.check.search(b"fw-01# ")
    assert get_platform("ios").terminal is None


def test_normalize_uses_the_loaders_platform(tmp_path):
    (tmp_path / "acme.yml").write_text(
        "name: acme\nnetwork_os: devicevault.network.cli\ncommands:\n"
        "  - {command: show system, comment: true}\n  - show config\nstartup: show saved\n"
        "noise: ['^# generated']\n")
    acme = get_platform("acme", tmp_path)
    result = normalize("h1", acme, ["Model: X", "# generated now\nset a 1", "set a 1"])
    assert result.text == "# Model: X\nset a 1\n" and result.unsaved is False
