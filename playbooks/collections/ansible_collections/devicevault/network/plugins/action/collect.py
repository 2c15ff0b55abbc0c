# DeviceVault: run a platform's commands over the host's persistent network_cli connection, in the
# controller (no module process per device), and return every output in order.
from __future__ import annotations

from ansible.module_utils.connection import Connection, ConnectionError
from ansible.plugins.action import ActionBase

from ansible_collections.devicevault.network.plugins.plugin_utils import normalize, platform_file


class ActionModule(ActionBase):
    """``devicevault.network.collect`` -> ``outputs`` (one string per command): the commands of the host's
    platform file (then its startup command), or ``commands: [...]``.

    The platform is ``platform`` if given, else it is resolved from the host's ``devicevault_platform`` /
    ``ansible_network_os`` (``network_os`` overrides the latter) by the one rule in
    ``plugin_utils/platform_file.py``; ``platforms_dir`` (else the host's ``devicevault_platforms_dir``, else
    ``$DEVICEVAULT_PLATFORMS_DIR``) is searched before the collection's own ``platforms/``. Variables are
    taken as the task sees them (the playbook passes them as arguments, so Ansible templates them).

    The result never holds what the device printed as it printed it: each output is shown with the
    platform file's noise dropped and its secrets masked (or dropped with ``devicevault_secrets: drop``), by
    the code DeviceVault stores versions with (``plugin_utils/normalize.py``); ``config`` is the whole
    normalised view when the platform's commands were sent. With ``commands`` for a host whose platform
    cannot be resolved there are no rules to apply, so ``outputs`` are left out (only ``lines``, a count,
    is returned)."""

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("commands", "platform", "network_os", "platforms_dir"))

    def _commands(self, task_vars):
        """The commands to send, or a failure message."""
        args = self._task.args
        if args.get("commands") is not None:
            commands = args["commands"]
            if isinstance(commands, str) or not isinstance(commands, list) or not commands:
                return None, "devicevault.network.collect: 'commands' must be a non-empty list"
            return [c.get("command") if isinstance(c, dict) else c for c in commands], None
        task_vars = task_vars or {}
        try:
            return platform_file.host_commands(
                args.get("platform") or task_vars.get(platform_file.PLATFORM_VAR),
                args.get("network_os") or task_vars.get("ansible_network_os"),
                args.get("platforms_dir") or task_vars.get(platform_file.PLATFORMS_DIR_VAR)), None
        except platform_file.PlatformError as exc:
            return None, "devicevault.network.collect: %s" % exc

    def _platform(self, task_vars):
        """The host's platform (for masking), or None when it has none."""
        args = self._task.args
        task_vars = task_vars or {}
        try:
            return platform_file.load(
                platform_file.platform_name(args.get("platform") or task_vars.get(platform_file.PLATFORM_VAR),
                                            args.get("network_os") or task_vars.get("ansible_network_os")),
                args.get("platforms_dir") or task_vars.get(platform_file.PLATFORMS_DIR_VAR))
        except platform_file.PlatformError:
            return None

    def _shown(self, task_vars, outputs, result):
        """``result`` with the masked view of ``outputs`` (never the raw text)."""
        platform = self._platform(task_vars)
        if platform is None:
            result["lines"] = [len(o.splitlines()) for o in outputs]
            return result
        try:
            mode = normalize.secrets_mode((task_vars or {}).get(normalize.SECRETS_VAR))
        except ValueError as exc:
            return dict(result, failed=True, msg=str(exc))
        if mode is normalize.SecretsMode.KEEP:
            mode = normalize.SecretsMode.MASK  # a task result is never a place for kept secrets
        result["outputs"] = ["\n".join(normalize.clean_lines(platform, o, mode)) for o in outputs]
        if self._task.args.get("commands") is None and not result.get("failed"):
            try:
                result["config"] = normalize.normalize(platform, outputs, mode).compare
            except normalize.OutputRefused as exc:
                result.update(failed=True, msg="devicevault.network.collect: %s" % exc)
        return result

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        socket_path = getattr(self._connection, "socket_path", None)
        if socket_path:
            # Ansible closes, at the end of the play, the persistent connections it saw in a task's arguments;
            # without a module run ours would linger (and hold the device's SSH session) until they time out
            self._task.args["_ansible_socket"] = socket_path
        commands, error = self._commands(task_vars)
        if error:
            return {"failed": True, "msg": error}
        if not socket_path:
            return {"failed": True, "msg": "devicevault.network.collect needs a persistent connection "
                                           "(ansible_connection: ansible.netcommon.network_cli)"}
        conn = Connection(socket_path)
        outputs = []
        for command in commands:
            try:
                out = conn.get(command=str(command))
            except ConnectionError as exc:
                return self._shown(task_vars, outputs, {"failed": True, "msg": str(exc), "command": command})
            if out is None:
                # network_cli over libssh takes a closed socket for the end of the reply: nothing came back
                return self._shown(task_vars, outputs, {
                    "failed": True, "command": command,
                    "msg": "connection closed by the device before its output was complete"})
            outputs.append(out if isinstance(out, str) else str(out))
        result.update(changed=False)
        return self._shown(task_vars, outputs, result)
