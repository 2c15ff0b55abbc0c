"""The RQ worker DeviceVault runs: RQ's forking worker whose work horse dies with it.

RQ runs each job in a *work horse*, a child process in a process group of its own. If the worker is
killed (SIGKILL, OOM killer, a crashed host agent), a plain RQ horse goes on and may finish the job after
queue hygiene has already handed it to another worker: two collections of the same hosts at once, and a
job that looks abandoned and finished at the same time. DeviceVault's rule is simpler: **a dead worker's
job is dead too**. The horse asks the kernel (``prctl(PR_SET_PDEATHSIG, SIGKILL)``) to be killed the
moment its worker dies, so the job stays in RQ's started registry, its host locks stay until they expire
or are taken over, and queue hygiene (``jobs.ops.hygiene``) retries it under the same job id. Ansible's own
processes run on a pseudo-terminal owned by the horse and get SIGHUP when it goes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

from jobs.queues import Worker

PR_SET_PDEATHSIG = 1
#: the C library, found once (``find_library`` runs ``ldconfig``: a process per work horse otherwise)
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux); if the parent is already gone
    (it died between the fork and this call), die now."""
    if _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:
        os._exit(1)


def preload() -> None:
    """Import, once and in the worker, what every job imports (DeviceVault's jobs, Ansible's inventory and
    ansible-runner): each work horse is forked from the worker and starts with them instead of importing
    them again (about a CPU-second per collection batch)."""
    import ansible.inventory.manager  # noqa: F401
    import ansible.parsing.dataloader  # noqa: F401
    import ansible.vars.manager  # noqa: F401
    import ansible_runner  # noqa: F401

    import jobs.tasks  # noqa: F401


def warm_inventory(job) -> None:
    """Before a collection job's work horse is forked: parse its inventory here, in the worker, unless this
    worker still holds it unchanged (``jobs.collect.inventory.open_inventory`` reuses it), so every horse
    starts with it parsed instead of parsing it again per batch (2 CPU-s for 1,000 hosts). A failure is left
    for the job itself to report."""
    from jobs.tasks import collect_batch

    if job.func_name != f"{collect_batch.__module__}.{collect_batch.__name__}" or len(job.args) < 3:
        return
    from jobs.collect.inventory import open_inventory
    from jobs.settings import Settings

    try:
        open_inventory(job.args[2], Settings.load())
    except Exception:  # noqa: BLE001 - the job reports it, naming the inventory
        pass


class DeviceVaultWorker(Worker):
    """RQ's forking worker with JSON jobs (``jobs.queues``); its work horse is killed with it (see the module
    docstring), and starts with the jobs' imports done (:func:`preload`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        preload()

    def fork_work_horse(self, job, queue):
        self._devicevault_parent = os.getpid()
        warm_inventory(job)
        return super().fork_work_horse(job, queue)

    def main_work_horse(self, job, queue):
        die_with_parent(self._devicevault_parent)
        return super().main_work_horse(job, queue)
