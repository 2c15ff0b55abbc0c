# DeviceVault: collect a whole batch of devices from one task (run_once), no process per device.
from __future__ import annotations

import os
import tempfile

from ansible import constants as C, context
from ansible.executor.task_executor import TaskExecutor
from ansible.playbook.play_context import PlayContext
from ansible.plugins.action import ActionBase

from ansible_collections.devicevault.network.plugins.plugin_utils import batch_fetch, platform_file

NETWORK_CLI = "ansible.netcommon.network_cli"
PREFIX = "devicevault.network.collect"


class ActionModule(ActionBase):
    """``devicevault.network.collect_batch`` (``run_once: true``) -> ``devices``: per host of the play batch,
    ``{"outputs": [...]}`` (one string per command of its platform file) or ``{"failed": true, "msg": ...}``.

    Each host's ``network_cli`` connection is set up here exactly as Ansible's TaskExecutor sets it up for a
    task on that host (its play context, connection variables, become/enable, the options of the
    connection, become, terminal/cliconf and libssh plugins), and :mod:`batch_fetch` drives them all, at most
    ``forks`` at once. With ``results_path`` the outputs are written there (one JSON line per device) and
    ``devices`` holds only each host's status: DeviceVault's jobs read that file, so a batch's
    configurations never travel in one task result."""

    TRANSFERS_FILES = False
    _requires_connection = False  # no ansible-connection process for this task: the hosts are handled here
    _VALID_ARGS = frozenset(("platforms_dir", "results_path", "processes"))

    def _connection_for(self, host, variables, templar):
        """``host``'s network_cli connection, not yet connected (TaskExecutor's own set-up; private API of
        ansible-core, pinned in pyproject.toml and checked by tests/test_fetch_batch.py)."""
        executor = TaskExecutor(host, self._task, variables, PlayContext(play=self._task.get_play()),
                                self._loader, self._shared_loader_obj, None, None)
        play_context = executor._play_context.set_task_and_variable_override(
            task=self._task, variables=variables, templar=templar)
        play_context.post_validate(templar=templar)
        if not play_context.remote_addr:
            play_context.remote_addr = host.address
        executor._play_context = play_context
        executor._connection = executor._get_connection(variables, templar, NETWORK_CLI)
        executor._set_connection_options(variables, templar)
        conn = batch_fetch.threaded(executor._connection)
        conn._play_context.timeout = conn.get_option("persistent_command_timeout")  # as TaskExecutor does
        return conn

    def _prepare(self, name, inventory, variable_manager, platforms_dir):
        """``(connection, commands)`` for one host; ValueError with the reason if it has none."""
        host = inventory.get_host(name)
        variables = variable_manager.get_vars(play=self._task.get_play(), host=host, task=self._task)
        templar = self._templar.copy_with_new_env(available_variables=variables)

        def var(key):
            value = variables.get(key)
            return templar.template(value) if value is not None else None

        connection = str(var("ansible_connection") or "")
        if connection.rsplit(".", 1)[-1] != "network_cli":
            raise ValueError("%s needs a persistent connection (ansible_connection: %s)" % (PREFIX, NETWORK_CLI))
        try:
            commands = platform_file.host_commands(
                var(platform_file.PLATFORM_VAR), var("ansible_network_os"),
                platforms_dir or var(platform_file.PLATFORMS_DIR_VAR))
        except platform_file.PlatformError as exc:
            raise ValueError("%s: %s" % (PREFIX, exc)) from None
        return self._connection_for(host, variables, templar), commands

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        hostvars = task_vars["hostvars"]
        variable_manager, inventory = hostvars._variable_manager, hostvars._inventory
        names = list(task_vars.get("ansible_play_batch") or task_vars.get("ansible_play_hosts") or [])
        forks = int(context.CLIARGS.get("forks") or C.DEFAULT_FORKS)

        results_path = args.get("results_path")
        scratch = None
        if not results_path:
            fd, scratch = tempfile.mkstemp(prefix="devicevault-batch-", suffix=".jsonl")
            os.close(fd)
        try:
            path = results_path or scratch
            batch_fetch.run_batch(
                names, lambda name: self._prepare(name, inventory, variable_manager, args.get("platforms_dir")),
                forks, batch_fetch.process_count(args.get("processes"), forks, len(names)), path)
            found = batch_fetch.read_results(path)
        finally:
            if scratch:
                os.unlink(scratch)
        devices = {}
        for name in names:
            outcome = found.get(name) or {"failed": True, "msg": "no result from the batch for this device"}
            if results_path:
                outcome.pop("outputs", None)
            devices[name] = outcome
        result.update(changed=False, devices=devices,
                      failed_hosts=sorted(n for n, r in devices.items() if r.get("failed")))
        return result
