"""The lab server: one asyncio process, one asyncssh listener per device.

Generic engine; everything platform-specific comes from the personality
(``lab/personalities/*.yml``). Run with ``python -m lab up`` or
:func:`lab.commands.up`.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import time
from pathlib import Path

import asyncssh

from . import state as S
from .apply import apply_config
from .control import new_device_state
from .inventory import Device, load_inventory
from .personality import Personality, personality_for
from .render import base_context, render_config
from .sessions import SNAPSHOT, SessionCounter

log = logging.getLogger("lab.server")


# --------------------------------------------------------------------------- sessions
class Session:
    def __init__(self, lab: "Lab", dev: Device, process: asyncssh.SSHServerProcess):
        self.lab, self.dev, self.proc = lab, dev, process
        self.p: Personality = lab.personality[dev.name]
        self.level = self.p.get("login_level", "enable")
        user = process.get_extra_info("username") or dev.user
        sep = self.p.get("username_suffix_sep")
        self.user = user.split(sep, 1)[0] if sep else user
        self.nl = self.p.get("newline", "\r\n")

    def st(self) -> dict:
        return self.lab.cache.get(self.dev.name)

    def ctx(self, st, **extra) -> dict:
        return base_context(st, self.p, user=self.user, level=self.level, **extra)

    def prompt(self, st) -> str:
        return self.p.render(self.p.get("prompts")[self.level], self.ctx(st))

    def write(self, text: str):
        self.proc.stdout.write(text.replace("\r\n", "\n").replace("\n", self.nl))

    async def delay(self, st):
        f = st.get("fault") or {}
        if f.get("mode") == "slow":
            await asyncio.sleep(float(f.get("delay", 5)))
        while (self.st().get("fault") or {}).get("mode") == "pause":  # until the fault is cleared
            await asyncio.sleep(0.1)

    async def readline(self, echo=True) -> str | None:
        """One line typed by the client, echoed. Reads what has arrived at once (a pasted configuration
        comes in large chunks) and echoes it in one write per chunk."""
        buf: list[str] = []
        shown: list[str] = []
        while True:
            if not self._pending:
                if shown:
                    self.proc.stdout.write("".join(shown))
                    shown = []
                self._pending = await self.proc.stdin.read(4096)
                if not self._pending:
                    return None
            ch, self._pending = self._pending[0], self._pending[1:]
            if ch == "\n" and self._last_cr:
                self._last_cr = False
                continue
            self._last_cr = ch == "\r"
            if ch in "\r\n":
                if shown:
                    self.proc.stdout.write("".join(shown))
                if echo:
                    self.write("\n")
                return "".join(buf)
            if ch in "\x7f\x08":
                if buf:
                    buf.pop()
                continue
            if ch == "\x03":
                buf = []
                continue
            if ch == "\x04":                 # Ctrl-D: ends a pasted configuration (Junos load ... terminal)
                if shown:
                    self.proc.stdout.write("".join(shown))
                return "".join(buf) + ch
            if ord(ch) < 32 and ch != "\t":
                continue
            buf.append(ch)
            if echo:
                shown.append(ch)

    _last_cr = False
    _pending = ""
    #: a configuration being typed in (``action: capture``): {spec, args, lines}
    capture: dict | None = None

    async def run(self):
        proc = self.proc
        st = self.st()
        if proc.command:                      # ssh host 'show version'
            out, _close = await self.execute(proc.command.strip(), st)
            self.write(out + ("\n" if out and not out.endswith("\n") else ""))
            proc.exit(0)
            return
        if (st.get("fault") or {}).get("mode") == "hang":
            await self._swallow()
            return
        await self.delay(st)
        banner = self.p.render(self.p.get("banner"), self.ctx(st))
        self.write(banner + "\n" + self.prompt(st))
        while True:
            line = await self.readline()
            if line is None:
                break
            st = self.st()
            mode = (st.get("fault") or {}).get("mode")
            if mode == "hang":
                await self._swallow()
                return
            if self.capture is not None:        # lines typed into a file, a session or a candidate
                prompt = self._captured(line, st)
                if prompt is not None:
                    self.write(prompt)
                    continue
                self.write(self.prompt(self.st()))
                continue
            out, close = await self.execute(line.strip(), st)
            if close == "drop":
                return
            await self.delay(st)
            if out:
                self.write(out.rstrip("\n") + "\n")
            if close:
                break
            if self.capture is not None:        # a capture just started: its own prompt (or none)
                self.write(self.p.render(self.capture["spec"].get("prompt"), self.capture["ctx"]))
                continue
            self.write(self.prompt(self.st()))
        proc.exit(0)

    async def _swallow(self):
        while await self.proc.stdin.read(4096):
            pass

    def error(self, line: str, st, key="error") -> str:
        toks = line.split()
        col = len(self.prompt(st)) + (line.index(toks[1]) if len(toks) > 1 else 0)
        return self.p.render(self.p.get(key) or self.p.get("error"),
                             self.ctx(st, command=line, caret=" " * col, token=(toks[1] if len(toks) > 1 else line)))

    async def execute(self, line: str, st: dict):
        """Return (output, close) for one command line. close: None | True | 'drop'."""
        if not line:
            return "", None
        f = st.get("fault") or {}
        if f.get("mode") == "answer" and self._answered_by_fault(line, f):
            return str(f.get("text", "")).replace("{command}", line), None
        cmd, mo = self.p.match(line, self.level)
        if cmd is None:
            return self.error(line, st), None
        spec = cmd.spec
        if spec.get("levels") and self.level not in spec["levels"]:
            return self.error(line, st, "denied"), None
        args = mo.groupdict() if mo.groupdict() else {}
        ctx = self.ctx(st, command=line, args=args, groups=mo.groups())
        if spec.get("confirm"):
            self.write(self.p.render(spec["confirm"], ctx))
            ans = await self.readline()
            if ans is None:
                return "", True
        action = spec.get("action")
        if action == "enable":
            return await self._enable(st, spec), None
        if action == "capture":
            return self._start_capture(spec, ctx), None
        if action == "apply":
            out = self._apply_file(spec, ctx)
            if spec.get("to"):
                self.level = self.p.render(spec["to"], ctx)
            return out, None
        if action == "set_level":
            self.level = spec["to"]
        elif action == "exit":
            if spec.get("to"):
                self.level = spec["to"]
            else:
                return self.p.render(spec.get("output"), ctx), True
        elif action == "save":
            with S.modify(self.lab.state_dir, self.dev.name) as wst:
                wst["startup"] = wst["running"]
                wst["saved_at"] = time.time()
        if spec.get("config"):
            text = render_config(st, spec["config"], self.p, ctx, spec.get("transform"), line)
            pre = self.p.render(spec.get("prefix"), {**ctx, "size": len(text)})
            out = pre + text
            f = st.get("fault") or {}
            if f.get("mode") == "disconnect":
                await self.delay(st)
                cut = int(len(out) * float(f.get("fraction", 0.4)))
                self.write(out[:cut])
                await self.proc.stdout.drain()
                self.proc.get_extra_info("connection").abort()
                return "", "drop"
            return out, None
        return self.p.render(spec.get("output"), ctx), None

    def _start_capture(self, spec: dict, ctx: dict) -> str:
        self.capture = {"spec": spec, "ctx": ctx, "lines": []}
        return self.p.render(spec.get("output"), ctx)

    def _captured(self, line: str, st) -> str | None:
        """One line typed while capturing: kept, or (matching ``until``) the end: the text is stored as the
        file ``file`` of the device state, or applied at once (``apply``). Returns the prompt to print while
        still capturing (None when it ended; '' when the device prints none)."""
        cap = self.capture
        spec, ctx = cap["spec"], cap["ctx"]
        end = line.endswith("\x04") and "\x04" or None
        if end:
            line = line[:-1]
        if end is None and re.fullmatch(spec["until"], line.strip()):
            end = line.strip()
        elif end is not None and line:
            cap["lines"].append(line)
        if end is None:
            if not any(re.fullmatch(d, line.strip()) for d in spec.get("drop") or ()):
                cap["lines"].append(line)
            return self.p.render(spec.get("prompt"), ctx)
        self.capture = None
        text = "\n".join(cap["lines"]) + "\n"
        with S.modify(self.lab.state_dir, self.dev.name) as wst:
            if spec.get("apply"):
                apply_config(wst, self.p, text, spec["apply"], self.user)
            else:
                wst.setdefault("files", {})[self.p.render(spec["file"], ctx)] = text
        if spec.get("to"):
            self.level = spec["to"]
        done = self.p.render(spec.get("done"), ctx)
        if done:
            self.write(done.rstrip("\n") + "\n")
        return None

    def _apply_file(self, spec: dict, ctx: dict) -> str:
        """``action: apply``: the device file ``file`` becomes the running configuration (``how``)."""
        name = self.p.render(spec["file"], ctx)
        with S.modify(self.lab.state_dir, self.dev.name) as wst:
            text = (wst.get("files") or {}).get(name)
            if text is None:
                return self.p.render(spec.get("missing") or "%Error opening {{ file }} (No such file or directory)",
                                     {**ctx, "file": name})
            apply_config(wst, self.p, text, spec.get("how", "replace"), self.user)
            if spec.get("remove"):
                wst["files"].pop(name, None)
        return self.p.render(spec.get("output"), ctx)

    def _answered_by_fault(self, line: str, fault: dict) -> bool:
        """Whether the ``answer`` fault answers ``line``: it matches the fault's ``commands`` regex, or (none
        given) it is one of the commands a backup sends, per the device's platform file."""
        if fault.get("commands"):
            return re.fullmatch(str(fault["commands"]), line) is not None
        from jobs.collect.platforms import get_platform

        platform = get_platform(self.p.name)
        return platform is not None and line in platform.command_lines

    async def _enable(self, st, spec) -> str:
        en = self.p.get("enable") or {}
        if self.level == "enable":
            return ""
        self.write(en.get("password_prompt", "Password: "))
        pw = await self.readline(echo=False)
        self.write("\n")
        want = self.dev.become_password if self.dev.become_password is not None else self.dev.password
        if pw is not None and pw == want:
            self.level = "enable"
            return ""
        return self.p.render(en.get("bad_password", "% Bad passwords"), self.ctx(st))


class _Server(asyncssh.SSHServer):
    def __init__(self, lab: "Lab", dev: Device):
        self.lab, self.dev = lab, dev

    counted = False

    def connection_made(self, conn):
        self.peer = conn.get_extra_info("peername")
        self.lab.sessions.opened(self.dev.name)
        self.counted = True

    def connection_lost(self, exc):
        if self.counted:
            self.counted = False
            self.lab.sessions.closed(self.dev.name)

    def begin_auth(self, username):
        return True

    def password_auth_supported(self):
        return True

    def validate_password(self, username, password):
        p = self.lab.personality[self.dev.name]
        sep = p.get("username_suffix_sep")
        strip = (lambda u: u.split(sep, 1)[0]) if sep else (lambda u: u)
        user = strip(username)
        try:
            st = self.lab.cache.get(self.dev.name)
        except FileNotFoundError:
            return False
        if (st.get("fault") or {}).get("mode") == "auth_fail":
            log.info("%s: auth_fail fault: rejecting %s", self.dev.name, username)
            return False
        ok = user == strip(self.dev.user) and password == self.dev.password
        if not ok:
            log.info("%s: bad credentials for %s", self.dev.name, username)
        return ok


# --------------------------------------------------------------------------- lab
class Lab:
    """All devices of one inventory, served from one process."""

    def __init__(self, inventory, state_dir, personalities_dir: str | None = None):
        self.inventory = str(inventory)
        self.state_dir = Path(state_dir)
        self.cache = S.StateCache(self.state_dir)
        self.devices: list[Device] = []
        self.personality: dict[str, Personality] = {}
        self.servers = []
        self.pdir = personalities_dir
        self.sessions = SessionCounter()

    def prepare(self) -> list[Device]:
        """Load inventory, create missing device states and the host key."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / SNAPSHOT).unlink(missing_ok=True)   # counts of an earlier lab run
        for d in load_inventory(self.inventory):
            p = personality_for(d.network_os, self.pdir, d.platform)
            if p is None:
                log.warning("%s: no personality for ansible_network_os=%s; ignored", d.name, d.network_os)
                continue
            d.personality = p.name
            self.personality[d.name] = p
            self.devices.append(d)
            sp = S.state_path(self.state_dir, d.name)
            if sp.exists():
                with S.modify(self.state_dir, d.name) as st:   # keep config/fault, refresh address
                    st.update(address=d.host, port=d.port, network_os=d.network_os)
                    if st.get("personality") != p.name:
                        st.update(new_device_state(d, p))
            else:
                with S.locked(self.state_dir, d.name):
                    S.write_state(self.state_dir, d.name, new_device_state(d, p))
        keyfile = self.state_dir / "ssh_host_key"
        if not keyfile.exists():
            key = asyncssh.generate_private_key("ssh-ed25519")
            key.write_private_key(str(keyfile))
            os.chmod(keyfile, 0o600)
        self.host_key = asyncssh.read_private_key(str(keyfile))
        S.atomic_write_json(self.state_dir / "lab.json", {
            "pid": os.getpid(), "inventory": os.path.abspath(self.inventory), "started_at": time.time(),
            "devices": [{"name": d.name, "host": d.host, "port": d.port, "personality": d.personality}
                        for d in self.devices]})
        return self.devices

    async def start(self):
        for d in self.devices:
            def factory(d=d):
                return _Server(self, d)

            async def proc_handler(process, d=d):
                try:
                    await Session(self, d, process).run()
                except (asyncssh.Error, BrokenPipeError, ConnectionError) as e:
                    log.debug("%s: session ended: %s", d.name, e)
                except Exception:
                    log.exception("%s: session crashed", d.name)
                    process.exit(1)

            srv = await asyncssh.create_server(
                factory, d.host, d.port, server_host_keys=[self.host_key], process_factory=proc_handler,
                line_editor=False, encoding="utf-8", server_version=self.personality[d.name].get("ssh_version", "OpenSSH_8.9"),
                keepalive_interval=0, login_timeout=60, reuse_address=True)
            self.servers.append(srv)
        log.info("serving %d devices", len(self.devices))

    async def serve_forever(self):
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        publisher = asyncio.create_task(self.sessions.publish_forever(self.state_dir))
        S.atomic_write_json(self.state_dir / "ready.json", {"pid": os.getpid(), "at": time.time()})
        await stop.wait()
        log.info("stopping")
        publisher.cancel()
        for s in self.servers:
            s.close()
        for s in self.servers:
            await s.wait_closed()


def serve(inventory, state_dir, personalities_dir: str | None = None):
    """Run a lab in the foreground until SIGTERM/SIGINT."""
    lab = Lab(inventory, state_dir, personalities_dir)
    lab.prepare()
    asyncio.run(lab.serve_forever())
