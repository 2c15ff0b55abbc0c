# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# The work happens in the action plugin (plugins/action/restore.py); this file documents the task.
DOCUMENTATION = r"""
module: restore
short_description: Put a stored configuration back on a network device with its platform file's restore commands
description:
  - Runs in the controller over the host's persistent C(network_cli) connection. Sends the C(restore.begin)
    commands of the host's platform file, every line of O(config_path) (except C(restore.skip) lines), then
    C(restore.end). C(restore.mode) says whether that replaces the configuration or merges into it.
  - The configuration is read from a file, so it (secrets included) never becomes a task argument or result.
options:
  config_path:
    description: The configuration to put on the device (a file on the controller).
    type: path
    required: true
  platform:
    description: Name of the platform file (default C(devicevault_platform), else the last part of O(network_os)).
    type: str
  network_os:
    description: The host's C(ansible_network_os) (default the host variable).
    type: str
  platforms_dir:
    description: A directory of platform files searched before the built-in one.
    type: str
author: DeviceVault (@devicevault)
"""
EXAMPLES = r"""
- name: Restore a configuration
  devicevault.network.restore:
    config_path: /run/devicevault/ams-ios-01.cfg
"""
RETURN = r"""
sent:
  description: How many configuration lines were sent.
  type: int
  returned: success
mode:
  description: C(replace) or C(merge), from the platform file.
  type: str
  returned: success
"""
