# SCRATCH PROTOTYPE (issue 12 item 1): one task per batch (run_once) that opens every host's network_cli
# connection in this process (no ansible-connection per device) and drives them from threads.
from __future__ import annotations

import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

from ansible import constants as C, context
from ansible.errors import AnsibleConnectionFailure
from ansible.executor.task_executor import TaskExecutor
from ansible.playbook.play_context import PlayContext
from ansible.plugins.action import ActionBase

from ansible_collections.devicevault.network.plugins.plugin_utils import platform_file

NETWORK_CLI = "ansible.netcommon.network_cli"
_deadline = threading.local()  # per worker thread: (monotonic deadline, timeout) of the current step


class _DeadlineChannel:
    """Wraps the libssh channel of one connection: network_cli's read loop (receive_libssh) polls
    read_bulk_response() forever on a silent device; ansible-connection breaks it with SIGALRM, which only
    works in the main thread. Here the reading thread itself raises once its own deadline has passed."""

    def __init__(self, chan):
        self._chan = chan

    def read_bulk_response(self, *a, **kw):
        end, timeout = getattr(_deadline, "v", (None, None))
        if end is not None and time.monotonic() > end:
            raise AnsibleConnectionFailure(
                "command timeout triggered, timeout value is %s secs." % timeout)
        data = self._chan.read_bulk_response(*a, **kw)
        if not data:
            time.sleep(0.01)  # idle device: poll at 100/s instead of ~200/s with 5 busy reads each
        return data

    def __getattr__(self, name):
        return getattr(self._chan, name)


def _connection_class(base):
    class ThreadedNetworkCli(base):
        @property
        def _ssh_shell(self):
            return self.__dict__.get("_ssh_shell_")

        @_ssh_shell.setter
        def _ssh_shell(self, chan):
            self.__dict__["_ssh_shell_"] = _DeadlineChannel(chan) if chan is not None else None
    return ThreadedNetworkCli


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False  # TaskExecutor starts no persistent connection for this task

    def _connection_for(self, host, variables):
        """A network_cli Connection for ``host`` set up exactly as TaskExecutor does (play context from the
        play + task + host vars, become plugin, options of connection, become, cliconf, ssh_type plugins)."""
        templar = self._templar.copy_with_new_env(available_variables=variables)
        te = TaskExecutor(host, self._task, variables, PlayContext(play=self._task.get_play()),
                          self._loader, self._shared_loader_obj, None, None)
        pc = te._play_context.set_task_and_variable_override(task=self._task, variables=variables, templar=templar)
        pc.post_validate(templar=templar)
        if not pc.remote_addr:
            pc.remote_addr = host.address
        te._play_context = pc
        te._connection = te._get_connection(variables, templar, NETWORK_CLI)
        te._set_connection_options(variables, templar)
        conn = te._connection
        conn.__class__ = _connection_class(type(conn))
        conn._play_context.timeout = conn.get_option("persistent_command_timeout")  # as TaskExecutor does
        return conn

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        hostvars = task_vars["hostvars"]
        vm = hostvars._variable_manager
        inventory = hostvars._inventory
        play = self._task.get_play()
        names = list(task_vars.get("ansible_play_batch") or task_vars["ansible_play_hosts"])
        forks = int(context.CLIARGS.get("forks") or C.DEFAULT_FORKS)

        jobs, devices = [], {}
        for name in names:  # templating and plugin setup in this thread (not thread-safe), ~ms per host
            host = inventory.get_host(name)
            try:
                variables = vm.get_vars(play=play, host=host, task=self._task)
                pname = platform_file.platform_name(variables.get(platform_file.PLATFORM_VAR),
                                                    self._templar.copy_with_new_env(available_variables=variables).template(variables.get("ansible_network_os", "")))
                commands = list(platform_file.load(pname, None).command_lines)
                jobs.append((name, self._connection_for(host, variables), commands))
            except Exception as exc:
                devices[name] = {"failed": True, "msg": "%s" % exc}

        def fetch(name, conn, commands):
            connect_t = conn.get_option("persistent_connect_timeout")
            command_t = conn.get_option("persistent_command_timeout")
            outputs = []
            try:
                _deadline.v = (time.monotonic() + connect_t, connect_t)
                conn._connect()
                for command in commands:
                    _deadline.v = (time.monotonic() + command_t, command_t)
                    out = conn.get(command=command)
                    if out is None:
                        return {"failed": True, "outputs": outputs, "command": command,
                                "msg": "connection closed by the device before its output was complete"}
                    outputs.append(out)
                return {"outputs": outputs}
            except Exception as exc:
                return {"failed": True, "outputs": outputs, "msg": str(exc) or type(exc).__name__,
                        "exception": traceback.format_exc()}
            finally:
                _deadline.v = (None, None)
                try:
                    conn.close()
                except Exception:
                    pass

        with ThreadPoolExecutor(max_workers=max(1, min(forks, len(jobs) or 1))) as pool:
            futures = {name: pool.submit(fetch, name, conn, cmds) for name, conn, cmds in jobs}
            for name, fut in futures.items():
                devices[name] = fut.result()
        result.update(changed=False, devices=devices)
        return result
