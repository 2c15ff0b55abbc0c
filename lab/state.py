"""Per-device state files: ``<state_dir>/devices/<host>.json``.

Written atomically (temp file + rename) under an fcntl lock so the lab server
and control clients (other processes) can both modify them. The server
re-reads a device's file (cached by mtime) at each session and command.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, unquote

FAULT_MODES = ("none", "auth_fail", "slow", "hang", "pause", "disconnect", "answer")


def devices_dir(state_dir) -> Path:
    return Path(state_dir) / "devices"


def state_path(state_dir, host: str) -> Path:
    """The state file of ``host``; the name is %-quoted, so any inventory name stays inside the directory."""
    return devices_dir(state_dir) / f"{quote(host, safe='')}.json"


def host_of(path: Path) -> str:
    return unquote(path.stem)


def atomic_write_json(path: Path, data) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def locked(state_dir, host: str):
    """Exclusive inter-process lock for read-modify-write of one device."""
    d = devices_dir(state_dir)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / f".{quote(host, safe='')}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_state(state_dir, host: str) -> dict:
    with open(state_path(state_dir, host)) as fh:
        return json.load(fh)


def write_state(state_dir, host: str, data: dict) -> None:
    data["updated_at"] = time.time()
    atomic_write_json(state_path(state_dir, host), data)


@contextlib.contextmanager
def modify(state_dir, host: str):
    """``with modify(sd, host) as st: st[...] = ...`` -- locked read-modify-write."""
    with locked(state_dir, host):
        st = read_state(state_dir, host)
        yield st
        write_state(state_dir, host, st)


class StateCache:
    """Server-side cache of device states, re-validated by mtime on every access."""

    def __init__(self, state_dir):
        self.state_dir = Path(state_dir)
        self._cache: dict[str, tuple[int, int, dict]] = {}

    def get(self, host: str) -> dict:
        p = state_path(self.state_dir, host)
        stt = p.stat()
        key = (stt.st_mtime_ns, stt.st_size)
        hit = self._cache.get(host)
        if hit and hit[:2] == key:
            return hit[2]
        with open(p) as fh:
            data = json.load(fh)
        self._cache[host] = (*key, data)
        return data
