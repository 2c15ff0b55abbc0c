# DeviceVault: data-driven terminal plugin (GPL-3.0-or-later, like the Ansible plugins it builds on).
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""devicevault.network.cli terminal plugin.

Prompts, error texts, paging commands, the privilege step and the logout command come from the
``terminal`` section of the host's platform file, found by the devicevault.network.cli cliconf plugin
(options ``devicevault_platform`` and ``devicevault_platforms_dir``) and read by the collection's one
loader (``plugin_utils/platform_file.py``, class ``Terminal``).
"""

import ast
import json

from ansible.errors import AnsibleConnectionFailure
from ansible.module_utils.common.text.converters import to_bytes, to_text

from ansible_collections.ansible.netcommon.plugins.plugin_utils.terminal_base import TerminalBase


class TerminalModule(TerminalBase):
    """Everything is read lazily: network_cli creates the terminal before its options (and so the
    platform name) are set, and reads the regexes only once the shell is open."""

    def _spec(self):
        cliconf = getattr(self._connection, "cliconf", None)
        load = getattr(cliconf, "_devicevault_terminal", None)
        if load is None:
            raise AnsibleConnectionFailure(
                "the devicevault.network.cli terminal plugin needs the devicevault.network.cli cliconf plugin")
        return load()

    @property
    def terminal_stdout_re(self):
        return list(self._spec().prompts)

    @property
    def terminal_stderr_re(self):
        return list(self._spec().errors)

    @property
    def ansi_re(self):
        return TerminalBase.ansi_re + list(self._spec().ansi)

    def on_open_shell(self):
        for command in self._spec().paging:
            try:
                self._exec_cli_command(to_bytes(command, errors="surrogate_or_strict"))
            except AnsibleConnectionFailure as exc:
                raise AnsibleConnectionFailure(
                    "unable to set terminal parameters with %r: %s" % (command, self._reason(exc)))

    def on_become(self, passwd=None):
        priv = self._spec().privilege
        if not priv:
            return
        prompt = self._get_prompt() or b""
        if priv.check.search(prompt):
            return
        # Always answer the password prompt (an empty answer if there is no password): a wrong or missing
        # password then fails at once instead of waiting for the command timeout.
        cmd = {"command": priv.command, "prompt": priv.prompt, "answer": passwd or "",
               "prompt_retry_check": True}
        try:
            self._exec_cli_command(to_bytes(json.dumps(cmd), errors="surrogate_or_strict"))
        except AnsibleConnectionFailure as exc:
            raise AnsibleConnectionFailure(
                "failed to elevate privilege with %r at prompt [%s]: %s"
                % (priv.command, to_text(prompt).strip(), self._reason(exc)))
        prompt = self._get_prompt() or b""
        if not priv.check.search(prompt):
            raise AnsibleConnectionFailure(
                "failed to elevate privilege with %r (wrong become password?): still at prompt [%s]"
                % (priv.command, to_text(prompt).strip()))

    def _reason(self, exc):
        """The device's error line from a failed command (network_cli raises with the whole response)."""
        raw = exc.args[0] if exc.args else to_text(exc)
        if not isinstance(raw, bytes):
            raw = to_text(raw)
            if raw[:2] in ("b'", 'b"'):  # ansible-core keeps the response as the repr of the bytes
                try:
                    raw = ast.literal_eval(raw)
                except (SyntaxError, ValueError):
                    pass
            raw = raw if isinstance(raw, bytes) else to_bytes(raw, errors="surrogate_or_strict")
        for regex in self._spec().errors:
            match = regex.search(raw)
            if match:
                start = raw.rfind(b"\n", 0, match.start()) + 1
                end = raw.find(b"\n", match.end())
                return to_text(raw[start:end if end >= 0 else len(raw)]).strip()
        return " | ".join(line.strip() for line in to_text(raw).splitlines() if line.strip())

    def on_close_shell(self):
        try:
            logout = self._spec().logout
        except Exception:  # no platform file: nothing to say on the way out
            return
        if logout:
            try:
                self._connection.send(command=to_bytes(logout, errors="surrogate_or_strict"), sendonly=True)
            except Exception:  # the device may already have closed the session
                pass
