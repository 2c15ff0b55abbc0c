# DeviceVault: put a stored configuration back on a device over the host's persistent network_cli connection,
# with the restore commands of its platform file (GPL-3.0-or-later).
from __future__ import annotations

import os

from ansible.module_utils.connection import Connection, ConnectionError
from ansible.plugins.action import ActionBase

from ansible_collections.devicevault.network.plugins.plugin_utils import normalize, platform_file


class ActionModule(ActionBase):
    """``devicevault.network.restore``: send the platform file's ``restore.begin`` commands, every line of the
    configuration in ``config_path`` (a file on the controller, so the text, secrets and all, never becomes
    a task argument or result), then ``restore.end``. Fails on the first answer matching the platform's
    ``errors`` or ``restore.errors``, quoting that line with its secrets masked. Returns ``sent`` (how many
    configuration lines) and ``mode`` (``replace`` or ``merge``), never the configuration."""

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("config_path", "platform", "network_os", "platforms_dir"))

    def _platform(self, task_vars):
        args = self._task.args
        return platform_file.load(
            platform_file.platform_name(args.get("platform") or task_vars.get(platform_file.PLATFORM_VAR),
                                        args.get("network_os") or task_vars.get("ansible_network_os")),
            args.get("platforms_dir") or task_vars.get(platform_file.PLATFORMS_DIR_VAR))

    @staticmethod
    def _masked(platform, line):
        """``line`` as a result may show it: a configuration line's secrets masked (the device may echo it)."""
        masked = normalize.clean_lines(platform, line.strip(), normalize.SecretsMode.MASK)
        return masked[0] if masked else "(a line the platform file calls noise)"

    def _refused(self, platform, output):
        """The first line of ``output`` that says the device refused a step, masked; else ''."""
        for pattern in platform.errors + platform.restore.errors:
            match = pattern.search(output)
            if match:
                return self._masked(platform, output[output.rfind("\n", 0, match.start()) + 1:].split("\n", 1)[0])
        return ""

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        socket_path = getattr(self._connection, "socket_path", None)
        if not socket_path:
            return {"failed": True, "msg": "devicevault.network.restore needs a persistent connection "
                                           "(ansible_connection: ansible.netcommon.network_cli)"}
        self._task.args["_ansible_socket"] = socket_path  # closed by Ansible at the end of the play
        try:
            platform = self._platform(task_vars)
        except platform_file.PlatformError as exc:
            return {"failed": True, "msg": "devicevault.network.restore: %s" % exc}
        if platform.restore is None:
            return {"failed": True, "msg": "devicevault.network.restore: platform %s has no 'restore' section: "
                                           "restoring is not supported" % platform.name}
        path = self._task.args.get("config_path")
        if not path or not os.path.isfile(str(path)):
            return {"failed": True, "msg": "devicevault.network.restore: config_path %r is not a file" % path}
        with open(str(path), encoding="utf-8", errors="surrogateescape") as fh:
            lines = fh.read().replace("\r\n", "\n").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        rules = platform.restore
        lines = [line for line in lines if not any(p.search(line) for p in rules.skip)]
        conn = Connection(socket_path)
        steps = ([(s.command, s.newline, not s.wait, "begin") for s in rules.begin]
                 + [(line, True, rules.stream, "config") for line in lines]
                 + [(s.command, s.newline, not s.wait, "end") for s in rules.end])
        for number, (command, newline, sendonly, part) in enumerate(steps, 1):
            try:
                out = conn.get(command=command, sendonly=sendonly, newline=newline)
            except ConnectionError as exc:  # network_cli's own error patterns, a timeout, a closed connection
                text = str(exc).strip()
                reason = (self._refused(platform, text) or self._masked(platform, text.splitlines()[0])) if text else "no answer"
                return {"failed": True, "step": number, "part": part,
                        "msg": "the device refused step %d (%s): %s" % (number, part, reason)}
            if sendonly:
                continue
            refused = self._refused(platform, out or "")
            if refused:
                return {"failed": True, "step": number, "part": part,
                        "msg": "the device refused step %d (%s): %s" % (number, part, refused)}
        result.update(changed=True, sent=len(lines), mode=rules.mode)
        return result
