# DeviceVault: run a platform's commands over the host's persistent network_cli connection, in the
# controller (no module process per device), and return every output in order.
from __future__ import annotations

from ansible.module_utils.connection import Connection, ConnectionError
from ansible.plugins.action import ActionBase

from ansible_collections.devicevault.network.plugins.plugin_utils import platform_file


class ActionModule(ActionBase):
    """``devicevault.network.collect: platform: ios`` (the platform file's commands, then its startup
    command) or ``commands: [...]`` -> ``outputs`` (one string per command)."""

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("commands", "platform", "platforms_dir"))

    def _commands(self):
        """The commands to send, or a failure message."""
        args = self._task.args
        if args.get("commands") is not None:
            commands = args["commands"]
            if isinstance(commands, str) or not isinstance(commands, list) or not commands:
                return None, "devicevault.network.collect: 'commands' must be a non-empty list"
            return commands, None
        if not args.get("platform"):
            return None, "devicevault.network.collect: give 'platform' (a platform file's name) or 'commands'"
        # The platform file is read here, in the task that uses it: no separate include_vars task (and
        # worker process) per device
        try:
            data = platform_file.load(platform_file.find(str(args["platform"]), args.get("platforms_dir") or None))
        except platform_file.PlatformFileError as exc:
            return None, "devicevault.network.collect: %s" % exc
        commands = platform_file.collect_commands(data)
        if not commands:
            return None, "devicevault.network.collect: platform %s has no commands" % args["platform"]
        return commands, None

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        socket_path = getattr(self._connection, "socket_path", None)
        if socket_path:
            # Ansible closes, at the end of the play, the persistent connections it saw in a task's arguments;
            # without a module run ours would linger (and hold the device's SSH session) until they time out
            self._task.args["_ansible_socket"] = socket_path
        commands, error = self._commands()
        if error:
            return {"failed": True, "msg": error}
        if not socket_path:
            return {"failed": True, "msg": "devicevault.network.collect needs a persistent connection "
                                           "(ansible_connection: ansible.netcommon.network_cli)"}
        conn = Connection(socket_path)
        outputs = []
        for command in commands:
            command = command.get("command") if isinstance(command, dict) else command
            try:
                out = conn.get(command=str(command))
            except ConnectionError as exc:
                return {"failed": True, "msg": str(exc), "command": command, "outputs": outputs}
            if out is None:
                # network_cli over libssh takes a closed socket for the end of the reply: nothing came back
                return {"failed": True, "command": command, "outputs": outputs,
                        "msg": "connection closed by the device before its output was complete"}
            outputs.append(out if isinstance(out, str) else str(out))
        result.update(changed=False, outputs=outputs)
        return result
