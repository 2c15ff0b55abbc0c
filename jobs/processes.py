"""Processes on this host: whether one still runs, and whether a registered RQ worker's are gone.

The one place that reads ``/proc`` for it (queue hygiene, the storage outbox's lost-job check, ``status`` and
the fetch's clean-up of runner directories ask here). A zombie does not count as running: where PID 1 does
not reap orphans (some container inits), a killed process's orphaned children stay zombies for good.
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) of ``pid`` from /proc, or None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[2])


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not reaped, does not)."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def group_alive(pgid: int) -> bool:
    """Whether a process of process group ``pgid`` still runs (RQ's scheduler child of a worker, anything
    it started); zombies do not count. Workers started by DeviceVault lead their own process group; their
    work horse has a group of its own and dies with the worker (``jobs.worker``)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if stat is not None and stat[1] == pgid and stat[0] not in ("Z", "X"):
                return True
    return False


def process_gone(pid: int) -> bool:
    """Whether ``pid`` (on this host) and every process of its process group are gone."""
    return not alive(pid) and not group_alive(pid)


def worker_gone(worker) -> bool:
    """Whether an RQ worker registered in Redis is dead: it ran on this host and its processes are all gone
    (workers on other hosts are left to their heartbeat, whose key then expires)."""
    return bool(worker.hostname == socket.gethostname() and worker.pid and process_gone(worker.pid))


def worker_process_dead(worker) -> bool:
    """Whether an RQ worker registered in Redis ran on this host and its main process is gone (its work
    horse, and the job it ran, died with it: ``jobs.worker``), even while a child of it (RQ's scheduler)
    lingers in its process group."""
    return bool(worker.hostname == socket.gethostname() and worker.pid and not alive(worker.pid))


def end_with_parent(sig: int = signal.SIGTERM) -> None:
    """Have the kernel send ``sig`` to this process when its parent dies (Linux ``PR_SET_PDEATHSIG``; a no-op
    elsewhere): for the processes a supervisor (``devicevault up``) starts, as ``preexec_fn``, so a SIGKILLed
    supervisor leaves none of them running on its own. (The collection's ``batch_fetch.die_with_parent`` does
    the same with SIGKILL, inside Ansible's processes.)"""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, int(sig), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
