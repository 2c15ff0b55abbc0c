"""SSH session accounting, observed by the lab server and read through the state directory.

The server counts SSH connections (asyncssh ``connection_made`` .. ``connection_lost``: a connection counts
from the TCP accept until it is gone, whether or not it ever authenticated): how many are open now, and the
most open at once since the last reset, for the whole lab and per device.

Control flows through two small JSON files in the state directory, like the per-device state files:

* ``sessions.request.json`` -- written by clients (:func:`request`, under a lock): ``{"seq": n, "reset_seq": k}``.
  Each request takes the next ``seq``; a peak reset also sets ``reset_seq`` to it.
* ``sessions.json`` -- written by the server (:meth:`SessionCounter.publish_forever`) when a count changed or a
  request came in: ``{"open", "peak", "per_device": {name: {"open", "peak"}}, "seq", "at"}``. ``seq`` is the
  newest request it has answered, so a client waits for ``seq >= its own`` and gets a snapshot taken after its
  call. ``per_device`` lists only devices with an open connection or a non-zero peak since the reset.

The server looks at the request file every :data:`TICK` seconds (one ``stat``), and writes only when something
changed, so an idle lab costs nothing and a busy one at most one small write per tick.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from . import state as S

SNAPSHOT = "sessions.json"
REQUEST = "sessions.request.json"
TICK = 0.05


class SessionCounter:
    """Server side: open and peak SSH connections, whole lab and per device (kept in the event loop's thread)."""

    def __init__(self):
        self.open = 0
        self.peak = 0
        self.per_device: dict[str, list[int]] = {}   # name -> [open, peak]
        self.seq = 0
        self._reset_seq = 0
        self._dirty = True

    def opened(self, device: str) -> None:
        self.open += 1
        self.peak = max(self.peak, self.open)
        counts = self.per_device.setdefault(device, [0, 0])
        counts[0] += 1
        counts[1] = max(counts[1], counts[0])
        self._dirty = True

    def closed(self, device: str) -> None:
        self.open -= 1
        self.per_device[device][0] -= 1
        self._dirty = True

    def reset_peak(self) -> None:
        """Peaks := what is open now; devices with nothing open are forgotten."""
        self.peak = self.open
        self.per_device = {d: [n, n] for d, (n, _) in self.per_device.items() if n}
        self._dirty = True

    def snapshot(self) -> dict:
        return {"open": self.open, "peak": self.peak, "seq": self.seq, "at": time.time(),
                "per_device": {d: {"open": n, "peak": p} for d, (n, p) in sorted(self.per_device.items()) if n or p}}

    def take_request(self, req: dict) -> None:
        """Apply a client's request (``seq``, ``reset_seq``) read from the request file."""
        if int(req.get("reset_seq", 0)) > self._reset_seq:
            self._reset_seq = int(req["reset_seq"])
            self.reset_peak()
        self.seq = max(self.seq, int(req.get("seq", 0)))
        self._dirty = True

    async def publish_forever(self, state_dir) -> None:
        """Answer requests and write ``sessions.json`` whenever something changed, until cancelled."""
        state_dir = Path(state_dir)
        seen = None
        while True:
            try:
                st = os.stat(state_dir / REQUEST)
                key = (st.st_ino, st.st_mtime_ns, st.st_size)
                if key != seen:
                    seen = key
                    self.take_request(json.loads((state_dir / REQUEST).read_text()))
            except (OSError, ValueError):
                pass
            if self._dirty:
                self._dirty = False
                S.atomic_write_json(state_dir / SNAPSHOT, self.snapshot())
            await asyncio.sleep(TICK)


def read_snapshot(state_dir) -> dict | None:
    """The server's last published snapshot (possibly a tick old, or from a lab that has stopped), or None."""
    try:
        return json.loads((Path(state_dir) / SNAPSHOT).read_text())
    except (OSError, ValueError):
        return None


def request(state_dir, reset_peak: bool = False, timeout: float = 10) -> dict:
    """Ask the running lab for a snapshot taken after this call (resetting the peaks first if ``reset_peak``).

    Raises TimeoutError when no lab answers within ``timeout`` seconds.
    """
    state_dir = Path(state_dir)
    with S.locked(state_dir, ".sessions"):
        try:
            req = json.loads((state_dir / REQUEST).read_text())
        except (OSError, ValueError):
            req = {"seq": 0, "reset_seq": 0}
        req["seq"] = int(req.get("seq", 0)) + 1
        if reset_peak:
            req["reset_seq"] = req["seq"]
        S.atomic_write_json(state_dir / REQUEST, req)
    deadline = time.monotonic() + timeout
    while True:
        snap = read_snapshot(state_dir)
        if snap and snap.get("seq", 0) >= req["seq"]:
            return snap
        if time.monotonic() > deadline:
            raise TimeoutError(f"no session count from a lab in {state_dir} after {timeout}s (is it running?)")
        time.sleep(TICK / 2)
