# DeviceVault: run a platform's commands over the host's persistent network_cli connection, in the
# controller (no module process per device), and return every output in order.
from __future__ import annotations

from ansible.module_utils.connection import Connection, ConnectionError
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    """``devicevault.network.collect: commands: [...]`` -> ``outputs`` (one string per command)."""

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("commands",))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        commands = self._task.args.get("commands") or []
        if isinstance(commands, str) or not isinstance(commands, list) or not commands:
            return {"failed": True, "msg": "devicevault.network.collect: 'commands' must be a non-empty list"}
        socket_path = getattr(self._connection, "socket_path", None)
        if not socket_path:
            return {"failed": True, "msg": "devicevault.network.collect needs a persistent connection "
                                           "(ansible_connection: ansible.netcommon.network_cli)"}
        # Ansible closes, at the end of the play, the persistent connections it saw in a task's arguments;
        # without a module run ours would linger (and hold the device's SSH session) until they time out
        self._task.args["_ansible_socket"] = socket_path
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
