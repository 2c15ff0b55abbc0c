# -*- coding: utf-8 -*-
# DeviceVault: a plain ansible-playbook / ansible-runner / AWX run of backup.yml as a DeviceVault run.
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: devicevault
type: notification
short_description: Hand every device a backup playbook collects to DeviceVault, as C(devicevault backup) would
description:
  - Turns a plain C(ansible-playbook), C(ansible-runner) or AWX/Tower job run of DeviceVault's
    C(playbooks/backup.yml) (any play with a C(devicevault.network.collect_batch) task) into a DeviceVault
    run. Each collected device is normalised and masked, compared against the version cache, and handed as
    a candidate through the storage outbox to every target of its location; its result and the run go to
    the index, so the run shows in C(devicevault runs), C(devicevault status) and the portal, with where it
    came from (C(ansible-playbook user@control-host), or the AWX job id, template name and launching user
    from the extra variables C(awx_job_id), C(awx_job_template_name), C(awx_user_name) or their C(tower_*)
    twins).
  - "How: this callback runs in the main C(ansible-playbook) process; the collect task runs in a worker
    forked from it after the task's start is announced. When the collect task starts, the callback creates
    the run, takes DeviceVault's host locks (a device being backed up by a DeviceVault worker is
    C(skipped_locked), and the reverse) and writes a private directory (mode 0700) whose path it puts in
    E(DEVICEVAULT_CALLBACK_DIR): the hosts not to fetch (locked, or failing with one line each, for
    example because DeviceVault's Redis cannot be reached: only those hosts fail), and the file where the
    task writes each device's raw output. When the task ends the callback reads that file and hands the
    outputs to the same function DeviceVault's own collector uses after its fetch, then releases the
    locks and prints one line with the run id and the counts. The raw outputs never appear in a task
    result."
  - The DeviceVault index consumer and storage workers (C(devicevault consumer), C(devicevault worker))
    decide whether a candidate is a new version and store it, as for DeviceVault's own runs.
  - Settings are DeviceVault's (E(DEVICEVAULT_REDIS_URL), E(DEVICEVAULT_DATABASE_URL),
    E(DEVICEVAULT_ENCRYPTION_KEYS), E(DEVICEVAULT_STORAGE_CONFIG)); in AWX a credential of the custom type
    C(DeviceVault) injects them (DeviceVault's README, "AWX / Tower"). The devices' group, location and
    secrets mode are read from the playbook's inventory (every C(-i) source, together, as Ansible reads
    them) as C(devicevault backup) reads it, with the playbook's own vault secrets (C(--vault-id),
    C(--vault-password-file), C(--ask-vault-pass)) besides those of E(DEVICEVAULT_VAULT_PASSWORD_FILE).
  - DeviceVault's Python packages must be importable by C(ansible-playbook)'s Python (in AWX, the execution
    environment of C(execution-environment.yml)). If they are not, the callback says so once and the
    playbook runs as plain Ansible.
  - Each start of a collect task is one run of the hosts it collects, so a play with C(serial) makes one run
    per batch.
requirements:
  - DeviceVault (its C(jobs) and C(storage) packages) in the Python that runs C(ansible-playbook)
  - a reachable DeviceVault Redis
notes:
  - Enable it with C(callbacks_enabled = devicevault.network.devicevault) in C(ansible.cfg), or
    E(ANSIBLE_CALLBACKS_ENABLED)=devicevault.network.devicevault, or in AWX the job template's environment
    (Settings, Jobs, Extra Environment Variables).
  - DeviceVault's own jobs pass C(devicevault_results_path); this callback leaves such runs alone.
author: DeviceVault (@devicevault)
"""

import json
import os
import shutil
import tempfile

from types import SimpleNamespace

from ansible import context
from ansible.executor.playbook_executor import PlaybookExecutor
from ansible.parsing.vault import VaultSecretsContext
from ansible.plugins.callback import CallbackBase

from ansible_collections.devicevault.network.plugins.action.collect_batch import (
    HANDOFF_ENV, HANDOFF_HOSTS, HANDOFF_RESULTS)
from ansible_collections.devicevault.network.plugins.plugin_utils import batch_fetch

#: the collect task's action, however the playbook names it
COLLECT_ACTIONS = ("devicevault.network.collect_batch", "collect_batch")
#: set by DeviceVault's own jobs (they hand the results to DeviceVault themselves)
OWN_JOB_VAR = "devicevault_results_path"
#: the hand-off directories: ``<tmp>/devicevault-callback-<pid of ansible-playbook>-<random>``
HANDOFF_PREFIX = "devicevault-callback-"


def _sweep_handoff_dirs():
    """Remove the hand-off directories (raw outputs) of ``ansible-playbook`` processes that are gone (killed
    before the collect task ended)."""
    tmp = tempfile.gettempdir()
    for name in os.listdir(tmp):
        pid = name[len(HANDOFF_PREFIX):].split("-", 1)[0] if name.startswith(HANDOFF_PREFIX) else ""
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)
        except OSError:  # alive, another user's
            pass


def _import_devicevault():
    """DeviceVault's playbook-run module and settings, or the reason they cannot be imported."""
    try:
        from jobs.collect import playbook
        from jobs.settings import Settings
    except Exception as exc:  # ImportError, or DeviceVault failing to start (its settings)
        return None, None, "%s: %s" % (type(exc).__name__, exc)
    return playbook, Settings, None


class CallbackModule(CallbackBase):
    """See DOCUMENTATION."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "devicevault.network.devicevault"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._playbook_name = ""
        self._play = None
        self._batches = None  # the play's batches of hosts (serial), worked out at its first collect task
        self._starts = 0  # collect task starts in this play
        self._off = None  # why this callback does nothing (said once), or None
        self._task = None  # uuid of the collect task under way
        self._run = None  # jobs.collect.playbook.PlaybookRun of that task
        self._dir = None  # its hand-off directory
        self._module = None

    # ------------------------------------------------------------------ playbook events
    def v2_playbook_on_start(self, playbook):
        self._playbook_name = os.path.basename(getattr(playbook, "_file_name", "") or "")

    def v2_playbook_on_play_start(self, play):
        self._play, self._batches, self._starts = play, None, 0

    def v2_playbook_on_task_start(self, task, is_conditional):
        action = getattr(task, "resolved_action", None) or task.action
        if action not in COLLECT_ACTIONS and task.action not in COLLECT_ACTIONS:
            return
        if self._task is not None:  # a second collect task before the first ended: finish that one first
            self._finish({})
        variables = self._play.get_variable_manager() if self._play is not None else None
        extra = dict(getattr(variables, "extra_vars", None) or {})
        if OWN_JOB_VAR in extra:
            return
        module, settings_cls, why = self._devicevault()
        if module is None:
            return
        hosts = self._batch_hosts(variables._inventory)
        try:
            settings = settings_cls.load()
            sources = [s for s in (context.CLIARGS.get("inventory") or []) if s and os.path.exists(s)]
            if not sources:
                raise ValueError("the playbook's inventory is not a file or directory DeviceVault can read "
                                 "(%s)" % (", ".join(context.CLIARGS.get("inventory") or []) or "none"))
            limit = context.CLIARGS.get("subset")
            run = module.PlaybookRun(
                settings=settings, inventory=[os.path.abspath(s) for s in sources], source=module.run_source(extra),
                selector="playbook %s%s" % (self._playbook_name or "?", " --limit %s" % limit if limit else ""),
                vault_secrets=self._vault_secrets())
            decided = run.begin(hosts)
        except Exception as exc:  # DeviceVault could not start the run: these hosts are not backed up into it
            cause = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            run, decided = None, {"fail": {h: "%s: not backed up into DeviceVault: %s" % (h, cause) for h in hosts}}
        _sweep_handoff_dirs()
        directory = tempfile.mkdtemp(prefix="%s%d-" % (HANDOFF_PREFIX, os.getpid()))  # 0700
        with open(os.path.join(directory, HANDOFF_HOSTS), "w", encoding="utf-8") as fh:
            json.dump(decided, fh)
        os.environ[HANDOFF_ENV] = directory  # the task's worker is forked after this: it sees it
        self._task, self._run, self._dir = task._uuid, run, directory
        for message in (decided.get("skip") or {}).values():  # failures: the playbook's own per-host report
            self._display.display("DeviceVault: %s" % message)

    def _task_over(self, result, *args, **kwargs):
        if self._task is not None and result._task._uuid == self._task:
            self._finish(batch_fetch.read_results(os.path.join(self._dir, HANDOFF_RESULTS)))

    v2_runner_on_ok = v2_runner_on_failed = v2_runner_on_skipped = v2_runner_on_unreachable = _task_over

    def v2_playbook_on_stats(self, stats):
        if self._task is not None:  # the collect task never reported (the play ended early)
            self._finish(None)

    # ------------------------------------------------------------------ helpers
    def _batch_hosts(self, inventory):
        """The hosts of the play batch this collect task runs on: the play's hosts split by ``serial`` as
        ansible-playbook splits them (its own function: ansible-core 2.19, as pinned), the n-th batch for the
        n-th start of a collect task in the play."""
        if self._batches is None:
            batches = PlaybookExecutor._get_serialized_batches(SimpleNamespace(_inventory=inventory), self._play)
            self._batches = [[h.name for h in batch] for batch in batches] or [[]]
        index = min(self._starts, len(self._batches) - 1)
        self._starts += 1
        return self._batches[index]

    def _finish(self, found):
        """Hand the task's results to DeviceVault (``found``: ``{host: record}``; None: release only)."""
        run, directory = self._run, self._dir
        self._task = self._run = self._dir = None
        os.environ.pop(HANDOFF_ENV, None)
        try:
            if run is not None:
                if found is None:
                    run.abandon()
                    self._display.warning("DeviceVault run %s: the collect task did not finish; nothing was "
                                          "handed to DeviceVault" % run.run_id)
                else:
                    results = run.end(found)
                    self._display.display(self._module.summary(run, results))
        except Exception as exc:
            self._display.warning("DeviceVault run %s: handing the results to DeviceVault failed: %s"
                                  % (run.run_id, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
        finally:
            if directory:
                shutil.rmtree(directory, ignore_errors=True)

    def _devicevault(self):
        if self._off is not None:
            return None, None, self._off
        module, settings_cls, why = _import_devicevault()
        if module is None:
            self._off = why
            self._display.warning(
                "devicevault.network.devicevault: DeviceVault's Python packages cannot be imported by this "
                "ansible-playbook (%s); the playbook runs as plain Ansible and nothing reaches DeviceVault "
                "(install DeviceVault into the Python that runs Ansible, or use its execution environment)" % why)
            return None, None, why
        self._module = module
        return module, settings_cls, None

    @staticmethod
    def _vault_secrets():
        """The vault secrets this ansible-playbook holds (``(vault id, secret)``, loaded by its CLI from
        ``--vault-id``, ``--vault-password-file``, ``--ask-vault-pass`` or Ansible's settings), for
        DeviceVault's reading of the same inventory: a prompted password is not asked for twice."""
        current = VaultSecretsContext.current(optional=True)
        return list(current.secrets) if current is not None else []
