# DeviceVault: data-driven cliconf plugin (GPL-3.0-or-later, like the Ansible plugins it builds on).
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = """
author: DeviceVault (@devicevault)
name: cli
short_description: Run CLI commands on a network OS described by a DeviceVault platform file
description:
  - Pairs with the C(devicevault.network.cli) terminal plugin. Nothing vendor-specific lives here. The
    platform file C(<platform>.yml) names the commands, and its C(terminal) section the prompts, error
    texts, paging commands, privilege step and logout command.
  - The platform file is looked up in O(platforms_dir) first, then in this collection's C(platforms)
    directory (one loader for every reader, C(plugin_utils/platform_file.py)).
version_added: 1.0.0
options:
  platform:
    description:
      - Name of the platform file without C(.yml), for example C(asa).
      - When unset, the last part of C(ansible_network_os) is used, unless it is C(devicevault.network.cli).
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

from ansible.errors import AnsibleConnectionFailure
from ansible.module_utils.common.text.converters import to_text

from ansible_collections.ansible.netcommon.plugins.plugin_utils.cliconf_base import CliconfBase
from ansible_collections.devicevault.network.plugins.plugin_utils import platform_file


class Cliconf(CliconfBase):
    __rpc__ = CliconfBase.__rpc__ + ["get_device_info"]

    def __init__(self, *args, **kwargs):
        super(Cliconf, self).__init__(*args, **kwargs)
        self._dv_platform = None
        self._dv_key = None

    # -- the platform file -------------------------------------------------------------------------
    def _platform_name(self):
        """(name, where it came from): the ``platform`` option, else from ansible_network_os."""
        option = self.get_option("platform")
        network_os = to_text(getattr(self._connection, "_network_os", "") or "")
        name = platform_file.platform_name(option, network_os)
        if not name:
            raise AnsibleConnectionFailure(
                "devicevault.network.cli: set the host variable %s to the name of a platform file "
                "(<name>.yml in %s)" % (platform_file.PLATFORM_VAR,
                                        ", ".join(platform_file.search_dirs(self.get_option("platforms_dir")))))
        return name, ("devicevault_platform" if option else "ansible_network_os")

    def _devicevault_platform(self):
        """This host's platform (loaded once per connection); its ``terminal`` section drives the terminal
        plugin."""
        (name, source), extra = self._platform_name(), self.get_option("platforms_dir")
        key = (name, tuple(platform_file.search_dirs(extra)))
        if self._dv_platform is not None and self._dv_key == key:
            return self._dv_platform
        try:
            platform = platform_file.load(name, extra)
        except platform_file.PlatformError as exc:
            raise AnsibleConnectionFailure("devicevault.network.cli: %s" % exc)
        if platform.terminal is None:
            raise AnsibleConnectionFailure(
                "%s: devicevault.network.cli needs a 'terminal' section with 'prompts' in the platform file"
                % platform.source)
        self._dv_platform, self._dv_key = platform, key
        self._connection.queue_message("vvvv", "devicevault.network.cli: platform %s (from %s) read from %s in pid %d"
                                       % (name, source, platform.source, os.getpid()))
        return platform

    def _devicevault_terminal(self):
        """The ``terminal:`` section of this host's platform file (platform_file.Terminal)."""
        return self._devicevault_platform().terminal

    # -- cliconf API -------------------------------------------------------------------------------
    def get_device_info(self):
        platform = self._devicevault_platform()
        return {"network_os": platform_file.OWN_NETWORK_OS, "network_os_platform": platform.name}

    def get_config(self, source="running", flags=None, format=None):
        platform = self._devicevault_platform()
        if format not in (None, "text"):
            raise ValueError("'format' value %s is not supported for get_config" % format)
        if flags:
            raise ValueError("'flags' are not supported for get_config on %s" % platform.name)
        if source == "running" and platform.config_commands:
            return "\n".join(self.send_command(cmd) for cmd in platform.config_commands)
        if source == "startup" and platform.startup:
            return self.send_command(platform.startup)
        raise ValueError("fetching the %s configuration is not supported on %s" % (source, platform.name))

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
