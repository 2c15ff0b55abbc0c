# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# The work happens in the action plugin (plugins/action/collect_batch.py); this file documents the task.
DOCUMENTATION = r"""
module: collect_batch
short_description: Collect every host of the play batch from one task, without a process per device
description:
  - Run it once per play batch (C(run_once) set to true). For every host of the play batch it sets up the host's C(network_cli)
    connection as Ansible would (the host's variables, become/enable, the vendors' terminal and cliconf
    plugins) and sends the commands of the host's platform file (C(platforms) directory of this
    collection), in threads of a few forked processes, at most C(forks) devices at once.
  - A host's failure (authentication, timeout, lost connection, rejected command, unknown platform) is its
    own result in RV(devices); it never fails the task or another host.
  - The raw outputs never enter the task result (what C(-v) prints, what callbacks, ansible-runner artifacts
    and AWX job events record). Without O(results_path), RV(devices) holds each host's normalised, masked
    view, made by the same code DeviceVault stores versions with.
  - When the C(devicevault.network.devicevault) callback runs the playbook, the raw outputs go to the
    callback's private directory (E(DEVICEVAULT_CALLBACK_DIR)), and hosts the callback could not lock or
    hand to DeviceVault are not fetched (C(skipped_locked), or failed with the reason).
options:
  platforms_dir:
    description:
      - A directory of platform files searched before the built-in one (a site's own platforms).
      - Default each host's C(devicevault_platforms_dir), else E(DEVICEVAULT_PLATFORMS_DIR).
    type: str
  results_path:
    description:
      - Write each device's result to this file as one JSON line (with C(host)) as soon as it is done, and
        leave the outputs out of RV(devices). DeviceVault's jobs use it.
    type: path
  backup_dir:
    description:
      - The playbook's C(backup_dir). Only files that must hold secrets are written here by this task
        (mode 0600), the device output exactly as read with O(backup_raw), or the version with its secrets
        kept for hosts with C(devicevault_secrets=keep). Their text never enters the task result; the
        playbook writes the other hosts' files from RV(devices) (the masked view).
    type: path
  backup_raw:
    description:
      - With O(backup_dir), write each device's output exactly as read (secrets and noise included).
      - The playbook sets it from C(devicevault_backup_raw).
    type: bool
    default: false
  processes:
    description:
      - How many processes share the batch (default one per 8 concurrent devices). Within a process the
        SSH handshakes (connect and login) run one after the other; raise it for far-away sites.
    type: int
author: DeviceVault (@devicevault)
"""
EXAMPLES = r"""
- name: Collect configuration
  devicevault.network.collect_batch:
  run_once: true
  register: batch
"""
RETURN = r"""
devices:
  description: Per host of the batch, C(config) (the normalised, masked view; left out with
    O(results_path)), C(sha256) of it, C(duration), C(file) (the device's file name in C(backup_dir),
    the host name percent-encoded so that no host name leaves that directory), C(written) (a file this task
    wrote), or C(failed) and C(msg), or C(skipped_locked) and C(msg).
  type: dict
  returned: always
failed_hosts:
  description: The hosts that failed, sorted.
  type: list
  elements: str
  returned: always
"""
