# DeviceVault: collect a whole batch of devices from one task (run_once), no process per device.
from __future__ import annotations

import json
import os
import shutil
import tempfile
from urllib.parse import quote

from ansible import constants as C, context
from ansible.executor.task_executor import TaskExecutor
from ansible.playbook.play_context import PlayContext
from ansible.plugins.action import ActionBase

from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.devicevault.network.plugins.plugin_utils import batch_fetch, normalize, platform_file

NETWORK_CLI = "ansible.netcommon.network_cli"
PREFIX = "devicevault.network.collect"
#: set by the ``devicevault.network.devicevault`` callback before this task starts (this action runs in a
#: worker forked from ansible-playbook, so it sees the callback's environment): a private (0700) directory
#: with ``hosts.json`` (hosts not to fetch: ``skip`` and ``fail``, each with its message) where the raw
#: results go (``results.jsonl``), for the callback to hand to DeviceVault
HANDOFF_ENV = "DEVICEVAULT_CALLBACK_DIR"
HANDOFF_HOSTS = "hosts.json"
HANDOFF_RESULTS = "results.jsonl"


class ActionModule(ActionBase):
    """``devicevault.network.collect_batch`` (``run_once: true``) -> ``devices``: per host of the play batch,
    ``{"outputs": [...]}`` (one string per command of its platform file) or ``{"failed": true, "msg": ...}``.

    Each host's ``network_cli`` connection is set up here exactly as Ansible's TaskExecutor sets it up for a
    task on that host (its play context, connection variables, become/enable, the options of the
    connection, become, terminal/cliconf and libssh plugins), and :mod:`batch_fetch` drives them all, at most
    ``forks`` at once. With ``results_path`` the outputs are written there (one JSON line per device) and
    ``devices`` holds only each host's status: DeviceVault's jobs read that file, so a batch's
    configurations never travel in one task result.

    Without ``results_path`` (a plain ``ansible-playbook`` run), the raw outputs never enter the task result
    either (Ansible prints, registers, and hands results to callbacks, ansible-runner artifacts and AWX job
    events): ``devices`` holds each host's normalised, masked view (``config``: the platform file's noise
    dropped, volatile parts rewritten, secrets masked, or dropped with ``devicevault_secrets: drop``), by
    the same code DeviceVault stores versions with (``plugin_utils/normalize.py``). Files that must hold
    secrets (``backup_raw``: the device output exactly as read; ``devicevault_secrets: keep``) are written
    by this action itself into ``backup_dir`` (mode 0600) and named in ``written``."""

    TRANSFERS_FILES = False
    _requires_connection = False  # no ansible-connection process for this task: the hosts are handled here
    _VALID_ARGS = frozenset(("platforms_dir", "results_path", "processes", "backup_dir", "backup_raw"))

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

    def _vars(self, name, inventory, variable_manager):
        """``(host, variables, templar, var)`` of host ``name`` as a task on it sees them (``var(key)``: templated)."""
        host = inventory.get_host(name)
        variables = variable_manager.get_vars(play=self._task.get_play(), host=host, task=self._task)
        templar = self._templar.copy_with_new_env(available_variables=variables)

        def var(key):
            value = variables.get(key)
            return templar.template(value) if value is not None else None

        return host, variables, templar, var

    def _prepare(self, name, inventory, variable_manager, platforms_dir):
        """``(connection, commands)`` for one host; ValueError with the reason if it has none."""
        host, variables, templar, var = self._vars(name, inventory, variable_manager)
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

    def _view(self, name, record, inventory, variable_manager, platforms_dir, backup_dir, backup_raw):
        """What a plain run may show of one fetched device: its normalised, masked view (never the raw
        outputs), after writing the secret-bearing backup file (raw, or secrets kept) if one is asked for."""
        outputs = [str(o) for o in record.pop("outputs", None) or []]
        var = self._vars(name, inventory, variable_manager)[3]
        try:
            platform = platform_file.load(
                platform_file.platform_name(var(platform_file.PLATFORM_VAR), var("ansible_network_os")),
                platforms_dir or var(platform_file.PLATFORMS_DIR_VAR))
            mode = normalize.secrets_mode(var(normalize.SECRETS_VAR))
            version = normalize.normalize(platform, outputs, mode)
        except (platform_file.PlatformError, ValueError) as exc:
            return {"failed": True, "msg": "%s: %s" % (name, exc), "duration": record.get("duration", 0.0)}
        view = dict(record, config=version.compare, sha256=normalize.sha256_text(version.compare))
        if version.changed_by:
            view["changed_by"] = version.changed_by
        if version.unsaved is not None:
            view["unsaved"] = version.unsaved
        view["file"] = backup_file_name(name)
        if backup_dir and (backup_raw or mode is normalize.SecretsMode.KEEP):
            text = "\n".join(outputs) + "\n" if backup_raw else version.text
            view["written"] = _write_private(os.path.join(str(backup_dir), view["file"]), text)
        return view

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        hostvars = task_vars["hostvars"]
        variable_manager, inventory = hostvars._variable_manager, hostvars._inventory
        names = list(task_vars.get("ansible_play_batch") or task_vars.get("ansible_play_hosts") or [])
        forks = int(context.CLIARGS.get("forks") or C.DEFAULT_FORKS)
        platforms_dir = args.get("platforms_dir")
        backup_dir = args.get("backup_dir")
        backup_raw = boolean(args.get("backup_raw") or False, strict=False)

        results_path = args.get("results_path")
        handoff = None if results_path else _handoff()
        decided = handoff[1] if handoff else {}
        scratch = None
        if not results_path:
            if handoff:
                results_path_used = os.path.join(handoff[0], HANDOFF_RESULTS)
            else:
                scratch = tempfile.mkdtemp(prefix="devicevault-batch-")  # 0700: raw outputs, removed below
                results_path_used = os.path.join(scratch, HANDOFF_RESULTS)
        else:
            results_path_used = results_path
        fetch = [n for n in names if n not in decided]
        try:
            batch_fetch.run_batch(
                fetch, lambda name: self._prepare(name, inventory, variable_manager, platforms_dir),
                forks, batch_fetch.process_count(args.get("processes"), forks, max(1, len(fetch))),
                results_path_used)
            found = batch_fetch.read_results(results_path_used)
        finally:
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)
        devices = {}
        for name in names:
            if name in decided:
                devices[name] = dict(decided[name])
                continue
            outcome = found.get(name) or {"failed": True, "msg": "no result from the batch for this device"}
            if results_path:
                outcome.pop("outputs", None)
            elif not outcome.get("failed"):
                outcome = self._view(name, outcome, inventory, variable_manager, platforms_dir, backup_dir, backup_raw)
            outcome.pop("outputs", None)  # never in the task result: a failure may carry partial outputs
            devices[name] = outcome
        result.update(changed=any(d.get("written") for d in devices.values()), devices=devices,
                      failed_hosts=sorted(n for n, r in devices.items() if r.get("failed")))
        return result


def _handoff():
    """``(directory, {host: decided result})`` when the ``devicevault`` callback runs this task, else None."""
    directory = os.environ.get(HANDOFF_ENV)
    if not directory or not os.path.isdir(directory):
        return None
    try:
        with open(os.path.join(directory, HANDOFF_HOSTS), encoding="utf-8") as fh:
            hosts = json.load(fh)
    except (OSError, ValueError):
        hosts = {}
    decided = {}
    for name, msg in (hosts.get("skip") or {}).items():
        decided[name] = {"skipped_locked": True, "msg": msg}
    for name, msg in (hosts.get("fail") or {}).items():
        decided[name] = {"failed": True, "msg": msg}
    return directory, decided


def backup_file_name(host):
    """The file of ``host`` in ``backup_dir``: ``<host>.cfg`` with everything but letters, digits and ``._-~``
    percent-encoded, and leading dots too (as storage names devices), so a host name such as ``../../etc/cron.d/x`` or ``.ssh`` stays a
    plain file inside ``backup_dir``."""
    name = quote(str(host), safe="")
    bare = name.lstrip(".")
    return "%2E" * (len(name) - len(bare)) + bare + ".cfg"


def _write_private(path, text):
    """Write ``text`` to ``path`` with mode 0600 from the start (it holds secrets); returns ``path``."""
    tmp = "%s.tmp-%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(normalize.to_bytes(text))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
