# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# The work happens in the action plugin (plugins/action/collect.py); this file documents the task.
DOCUMENTATION = r"""
module: collect
short_description: Run a platform's CLI commands over network_cli and return every output
description:
  - Runs in the controller over the host's persistent C(network_cli) connection (no module process per
    device), sending each command through the platform's cliconf plugin in order.
  - Without O(commands), the commands come from the host's platform file (in the C(platforms) directory of
    this collection, or a site's own directory O(platforms_dir)). These are its C(commands), then its
    C(startup) command when it has one.
options:
  platform:
    description:
      - Name of the platform file without C(.yml), for example C(ios).
      - Default the host variable C(devicevault_platform), else the last part of O(network_os).
    type: str
  network_os:
    description: The host's C(ansible_network_os) (default the host variable), when O(platform) is empty.
    type: str
  platforms_dir:
    description:
      - A directory of platform files searched before the built-in one (a site's own platforms).
      - Default the host variable C(devicevault_platforms_dir), else E(DEVICEVAULT_PLATFORMS_DIR).
    type: str
  commands:
    description: Commands to send, in order (strings, or mappings with C(command)); instead of O(platform).
    type: list
    elements: raw
author: DeviceVault (@devicevault)
"""
EXAMPLES = r"""
- name: Collect with the commands of the host's platform file
  devicevault.network.collect:
  register: collected

- name: Send given commands instead
  devicevault.network.collect:
    commands:
      - show version
      - show running-config
"""
RETURN = r"""
outputs:
  description:
    - One output per command, in order, as the platform file shows it (noise dropped, secrets masked, or
      dropped with C(devicevault_secrets=drop)); never the raw text.
    - Left out when O(commands) are sent to a host with no platform file (nothing says what to mask).
  type: list
  elements: str
  returned: when the host has a platform file
config:
  description: The normalised, masked view of the host's configuration (what DeviceVault compares).
  type: str
  returned: success, without O(commands)
lines:
  description: The number of lines of each output, when RV(outputs) are left out.
  type: list
  elements: int
  returned: when the host has no platform file
"""
