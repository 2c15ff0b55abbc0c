# DeviceVault: data-driven cliconf plugin (GPL-3.0-or-later, like the Ansible plugins it builds on).
from __future__ import annotations

DOCUMENTATION = """
author: DeviceVault
name: cli
short_description: Run CLI commands on a network OS described by a DeviceVault platform file
description:
  - Pairs with the C(devicevault.network.cli) terminal plugin. Nothing vendor-specific lives here. The
    platform file C(<platform>.yml) names the commands, and its C(terminal) section the prompts, error
    texts, paging commands, privilege step and logout command.
  - The platform file is looked up in O(platforms_dir) first, then in the C(platforms) directory next to
    the C(collections) directory this collection lives in (DeviceVault's C(playbooks/platforms)).
version_added: 1.0.0
options:
  platform:
    description:
      - Name of the platform file without C(.yml), for example C(asa).
      - When unset, the last part of C(ansible_network_os) is used unless it is C(cli).
    type: str
    vars:
      - name: devicevault_platform
  platforms_dir:
    description:
      - A directory of platform files searched before the built-in one (a site's own platforms).
    type: str
    env:
      - name: DEVICEVAULT_PLATFORMS_DIR
    vars:
      - name: devicevault_platforms_dir
"""

import json
import os
import re

from ansible.errors import AnsibleConnectionFailure
from ansible.module_utils.common.text.converters import to_bytes, to_text

from ansible_collections.ansible.netcommon.plugins.plugin_utils.cliconf_base import CliconfBase
from ansible_collections.devicevault.network.plugins.plugin_utils import platform_file


def _regexes(path, key, values, flags=0):
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out = []
    for value in values:
        try:
            out.append(re.compile(to_bytes(str(value), errors="surrogate_or_strict"), flags))
        except re.error as exc:
            raise AnsibleConnectionFailure("%s: bad regular expression in terminal.%s: %r: %s" % (path, key, value, exc))
    return out


def _commands(path, key, values):
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise AnsibleConnectionFailure("%s: terminal.%s must be a list of commands" % (path, key))
    return list(values)


def terminal_spec(path, data):
    """The compiled ``terminal:`` section of the platform file at ``path`` (schema: platforms/README.md)."""
    term = data.get("terminal")
    if not isinstance(term, dict) or not term.get("prompts"):
        raise AnsibleConnectionFailure(
            "%s: devicevault.network.cli needs a 'terminal' section with 'prompts' in the platform file" % path)
    spec = {
        "path": path,
        "name": str(data.get("name") or os.path.splitext(os.path.basename(path))[0]),
        "prompts": _regexes(path, "prompts", term.get("prompts")),
        "errors": _regexes(path, "errors", term.get("errors"), re.MULTILINE),
        "ansi": _regexes(path, "ansi", term.get("ansi")),
        "paging": _commands(path, "paging", term.get("paging")),
        "logout": str(term.get("logout") or ""),
        "privilege": None,
        "commands": [c if isinstance(c, str) else str(c.get("command")) for c in data.get("commands") or []],
        "config_commands": [c if isinstance(c, str) else str(c.get("command"))
                            for c in data.get("commands") or [] if isinstance(c, str) or not c.get("comment")],
        "startup": str(data.get("startup") or ""),
    }
    priv = term.get("privilege")
    if priv:
        if not isinstance(priv, dict) or not all(priv.get(k) for k in ("command", "prompt", "check")):
            raise AnsibleConnectionFailure("%s: terminal.privilege needs 'command', 'prompt' and 'check'" % path)
        _regexes(path, "privilege.prompt", priv["prompt"])  # validated here; network_cli compiles it itself
        spec["privilege"] = {"command": str(priv["command"]), "prompt": str(priv["prompt"]),
                             "check": _regexes(path, "privilege.check", priv["check"])[0]}
    return spec


class Cliconf(CliconfBase):
    __rpc__ = CliconfBase.__rpc__ + ["get_device_info"]

    def __init__(self, *args, **kwargs):
        super(Cliconf, self).__init__(*args, **kwargs)
        self._dv_spec = None
        self._dv_key = None

    # -- the platform file -------------------------------------------------------------------------
    def _platform_name(self):
        """(name, where it came from): the ``platform`` option, else the last part of ansible_network_os."""
        name, source = self.get_option("platform"), "devicevault_platform"
        if not name:
            network_os = to_text(getattr(self._connection, "_network_os", "") or "")
            last = network_os.rsplit(".", 1)[-1]
            name, source = (last if last and last != "cli" else ""), "ansible_network_os"
        if not name:
            raise AnsibleConnectionFailure(
                "devicevault.network.cli: set the host variable devicevault_platform to the name of a platform "
                "file (playbooks/platforms/<name>.yml)")
        return name, source

    def _dirs(self):
        return platform_file.search_dirs(self.get_option("platforms_dir"))

    def _devicevault_terminal(self):
        """The compiled ``terminal:`` section of this host's platform file (loaded once per connection)."""
        (name, source), dirs = self._platform_name(), self._dirs()
        key = (name, tuple(dirs))
        if self._dv_spec is not None and self._dv_key == key:
            return self._dv_spec
        try:
            path = platform_file.find(name, self.get_option("platforms_dir"))
            data = platform_file.load(path)
        except platform_file.PlatformFileError as exc:
            raise AnsibleConnectionFailure("devicevault.network.cli: %s" % exc)
        self._dv_spec, self._dv_key = terminal_spec(path, data), key
        self._connection.queue_message("vvvv", "devicevault.network.cli: platform %s (from %s) read from %s in pid %d"
                                       % (name, source, path, os.getpid()))
        return self._dv_spec

    # -- cliconf API -------------------------------------------------------------------------------
    def get_device_info(self):
        spec = self._devicevault_terminal()
        return {"network_os": "devicevault.network.cli", "network_os_platform": spec["name"]}

    def get_config(self, source="running", flags=None, format=None):
        spec = self._devicevault_terminal()
        if format not in (None, "text"):
            raise ValueError("'format' value %s is not supported for get_config" % format)
        if flags:
            raise ValueError("'flags' are not supported for get_config on %s" % spec["name"])
        if source == "running" and spec["config_commands"]:
            return "\n".join(self.send_command(cmd) for cmd in spec["config_commands"])
        if source == "startup" and spec["startup"]:
            return self.send_command(spec["startup"])
        raise ValueError("fetching the %s configuration is not supported on %s" % (source, spec["name"]))

    def edit_config(self, candidate=None, commit=True, replace=None, comment=None):
        raise ValueError("devicevault.network.cli only reads configurations (edit_config is not supported)")

    def get(self, command=None, prompt=None, answer=None, sendonly=False, newline=True, output=None,
            check_all=False):
        if not command:
            raise ValueError("must provide value of command to execute")
        if output:
            raise ValueError("'output' value %s is not supported for get" % output)
        return self.send_command(command=command, prompt=prompt, answer=answer, sendonly=sendonly,
                                 newline=newline, check_all=check_all)

    def get_capabilities(self):
        result = super(Cliconf, self).get_capabilities()
        result["device_operations"] = {
            "supports_diff_replace": False, "supports_commit": False, "supports_rollback": False,
            "supports_defaults": False, "supports_onbox_diff": False, "supports_commit_comment": False,
            "supports_multiline_delimiter": False, "supports_diff_match": False,
            "supports_diff_ignore_lines": False, "supports_generate_diff": False, "supports_replace": False,
        }
        result["format"] = ["text"]
        result["output"] = []
        return json.dumps(result)
