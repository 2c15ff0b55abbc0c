# -*- coding: utf-8 -*-
# The work happens in the action plugin (plugins/action/collect.py); this file documents the task.
DOCUMENTATION = r"""
module: collect
short_description: Run a list of CLI commands over network_cli and return every output
description:
  - Runs in the controller over the host's persistent C(network_cli) connection (no module process per
    device), sending each command through the platform's cliconf plugin in order.
options:
  commands:
    description: Commands to send, in order (strings, or mappings with C(command)).
    type: list
    elements: raw
    required: true
author: DeviceVault
"""
RETURN = r"""
outputs:
  description: One output per command, in order.
  type: list
  elements: str
  returned: success
"""
