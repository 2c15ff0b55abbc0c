# DeviceVault: fetch a whole batch of devices over network_cli in this process (GPL-3.0-or-later).
"""Many ``network_cli`` connections driven from one process: no ``ansible-connection`` process per device.

Ansible normally starts one ``ansible-connection`` process per device (a fresh interpreter that imports
Ansible: about two thirds of a backup's CPU). The ``collect_batch`` action instead builds each host's
``network_cli`` connection here, with that host's own variables and the vendors' own terminal and cliconf
plugins (see the action), and this module drives the connections concurrently:

- **threads, in a few forked processes.** A batch is split over ``processes`` processes forked from the
  action after the connections are set up (so they start with Ansible already imported; a constant number
  per batch, never one per device), each running threads; the threads of all processes together never
  exceed ``forks``, so at most ``forks`` devices are connected at once.
- **why more than one process:** pylibssh holds Python's GIL while libssh connects and authenticates, so
  within one process the SSH handshakes run one at a time (a device slow to log in, for example behind a
  slow TACACS server, delays the other handshakes of its process, never the command phase of the
  others). Two measures keep that harmless: the TCP connection and the wait for the device's SSH banner
  happen here, in Python, where waiting releases the GIL (a black-holed port that accepts and never
  answers costs its own thread only), and libssh is handed the connected socket; and a thread's deadline
  does not count time it could not run because another thread held the GIL. More processes (setting
  ``DEVICEVAULT_FETCH_PROCESSES``) mean fewer handshakes in a row: worth raising for sites far away.
- **timeouts per thread.** ``ansible-connection`` enforces the command timeout with ``SIGALRM``, which only
  works in a process's main thread; here each reading thread checks its own deadline (connect timeout
  while logging in, command timeout per command) every time it polls its channel, and raises the same
  ``command timeout triggered`` error Ansible does. The timeout is the longest *silence*: it starts again
  whenever data arrives, so a configuration of many megabytes from a slow device is read whole (as RANCID's
  expect does), and what bounds a device that never stops talking is the size limit,
  ``DEVICEVAULT_MAX_OUTPUT_MB`` (:data:`MAX_OUTPUT_MB` by default) per command, with a clear error.
- **one result per device, as it finishes**, one JSON line each to ``results_path`` (so a batch's
  configurations never travel through one giant task result), written under a lock shared by the
  processes.
- **no session left open**: every connection is closed when its device is done, whatever happened; a
  forked process that dies takes its sockets with it, and the parent reports its unfinished devices.

Only the standard library and Ansible: this runs inside Ansible's processes.
"""
from __future__ import annotations

import ctypes
import fcntl
import gc
import json
import os
import re
import select
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ansible.errors import AnsibleConnectionFailure

#: a gap this long between two polls of one channel means the thread could not run (another thread held
#: the GIL, e.g. in a slow SSH handshake): that time does not count against the device's deadline
FROZEN_GAP = 0.5
#: at most this many devices' handshakes wait on each other in one process (see the module docstring)
HANDSHAKES_PER_PROCESS = 8
#: the most one poll of a channel returns (the deadline is checked between polls)
MAX_CHUNK = 1 << 20
#: how long a closed session waits for the device to close its side of the connection
CLOSE_GRACE = 2.0
#: the largest reply to one command, in MiB, unless ``DEVICEVAULT_MAX_OUTPUT_MB`` says otherwise
MAX_OUTPUT_MB = 64
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


def max_output_bytes():
    """The size limit of one command's reply (``DEVICEVAULT_MAX_OUTPUT_MB``, else :data:`MAX_OUTPUT_MB`)."""
    value = os.environ.get("DEVICEVAULT_MAX_OUTPUT_MB") or MAX_OUTPUT_MB
    try:
        return int(float(value) * (1 << 20))
    except ValueError:
        raise ValueError("DEVICEVAULT_MAX_OUTPUT_MB=%r: must be a number of MiB" % value) from None


class _Deadline(threading.local):
    end = None
    timeout = None
    last = None
    received = 0
    limit = None

    def start(self, timeout):
        self.timeout = timeout
        self.last = time.monotonic()
        self.end = self.last + float(timeout)
        self.received = 0
        if self.limit is None:
            self.limit = max_output_bytes()

    def arrived(self, size):
        """``size`` bytes came: the silence starts again; a reply past the size limit ends here."""
        if self.end is None:
            return
        self.received += size
        if self.received > self.limit:
            raise AnsibleConnectionFailure(
                "the reply is larger than the size limit of %g MiB (DEVICEVAULT_MAX_OUTPUT_MB); raise the limit "
                "for this device's configuration" % (self.limit / (1 << 20)))
        self.end = time.monotonic() + float(self.timeout)

    def stop(self):
        self.end = self.last = None

    def check(self):
        now = time.monotonic()
        if self.end is None:
            return
        if self.last is not None and now - self.last > FROZEN_GAP:
            self.end += now - self.last  # this thread was not running: not the device's fault
        self.last = now
        if now > self.end:
            raise AnsibleConnectionFailure("command timeout triggered, timeout value is %s secs." % self.timeout)


_deadline = _Deadline()


class _DeadlineChannel:
    """network_cli's libssh read loop (``receive_libssh``) polls ``read_bulk_response()`` until a prompt comes,
    and after every chunk searches the whole reply so far for the terminal plugin's prompt and error
    patterns. Here each poll checks the thread's deadline, returns everything the channel holds (up to
    :data:`MAX_CHUNK`) instead of pylibssh's 5 x 1 KiB with 1 ms sleeps, so a reply is searched a few times
    instead of once per 5 KiB (that search was most of a fetch's CPU, and quadratic in the reply's size), and
    an idle poll sleeps 10 ms (network_cli's own loop would spin)."""

    def __init__(self, chan):
        self._chan = chan

    def read_bulk_response(self, *args, **kwargs):
        _deadline.check()
        chunks, size = [], 0
        while size < MAX_CHUNK:
            data = self._chan.read_nonblocking(size=1024)  # None at the end of the stream, as pylibssh's own
            if not data:
                break
            chunks.append(data)
            size += len(data)
        if not chunks:
            time.sleep(0.01)
            return b""
        _deadline.arrived(size)
        return b"".join(chunks)

    def __getattr__(self, name):
        return getattr(self._chan, name)


_classes = {}
#: bytes before the new data that a prompt or error search looks at again: longer than any prompt or error
#: line, so one cut by a read is still found whole
SEARCH_OVERLAP = 1024


def _new_part(conn, what, response):
    """The part of ``response`` (the reply so far to one command) that the ``what`` search has not seen."""
    seen = conn.__dict__.setdefault("_devicevault_seen", {})
    start = seen.get(what, 0)
    seen[what] = len(response)
    return response[max(0, start - SEARCH_OVERLAP):] if start else response


def threaded(conn):
    """Make ``conn`` (a network_cli connection) wrap its shell channel in :class:`_DeadlineChannel`, and search
    only what each read added (plus :data:`SEARCH_OVERLAP`) for the terminal's prompt and error patterns:
    network_cli searches the whole reply so far after every read, which is quadratic in the reply's size (a 20
    MB configuration cost 150 CPU-s). Whatever matched earlier stopped the read there, so nothing is missed.
    A prompt pattern without ``re.M`` can only match at the end of the reply: only its last bytes are searched."""
    base = type(conn)
    if base not in _classes:
        def _get(self):
            return self.__dict__.get("_devicevault_shell")

        def _set(self, chan):
            self.__dict__["_devicevault_shell"] = _DeadlineChannel(chan) if chan is not None else None

        def _find_prompt(self, response):
            if not any(pattern.flags & re.M for pattern in self._terminal_stdout_re):
                return base._find_prompt(self, response[-SEARCH_OVERLAP:])  # "$" is the end of the reply
            return base._find_prompt(self, _new_part(self, "prompt", response))

        def _find_error(self, response):
            return base._find_error(self, _new_part(self, "error", response))

        def receive(self, *args, **kwargs):
            self.__dict__["_devicevault_seen"] = {}  # a new reply: nothing of it seen yet
            return base.receive(self, *args, **kwargs)

        _classes[base] = type("Threaded" + base.__name__, (base,), {
            "_ssh_shell": property(_get, _set), "_find_prompt": _find_prompt, "_find_error": _find_error,
            "receive": receive})
    conn.__class__ = _classes[base]
    return conn


def _open_socket(host, port, timeout):
    """A TCP connection to ``host:port`` on which the device has started to speak (its SSH banner is
    waiting, unread), or the error libssh would have raised. Waiting here releases the GIL."""
    from pylibsshext.errors import LibsshSessionException

    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except socket.timeout:
        raise LibsshSessionException("ssh connect failed: Timeout connecting to %s" % host) from None
    except OSError as exc:
        raise LibsshSessionException("ssh connect failed: Failed to connect: %s" % (exc.strerror or exc)) from None
    try:
        readable = select.select([sock], [], [], timeout)[0]
        if not readable:
            raise LibsshSessionException(
                "ssh connect failed: Timeout connecting to %s (no SSH banner within %ss)" % (host, timeout))
        if not sock.recv(1, socket.MSG_PEEK):
            raise LibsshSessionException("ssh connect failed: connection closed by remote host before its SSH banner")
        sock.setblocking(True)
        return sock
    except BaseException:
        sock.close()
        raise


def _close_when_device_has(sock, grace=CLOSE_GRACE):
    """Close ``sock`` once the device has closed its side too (at most ``grace`` seconds): the session is then
    over for the device as well before this thread takes the next one, so the device side never sees more
    than ``forks`` sessions of ours at once (and a device with few vty lines gets its line back)."""
    end = time.monotonic() + grace
    try:
        sock.shutdown(socket.SHUT_WR)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            if not sock.recv(65536):
                break
    except OSError:
        pass
    finally:
        sock.close()


def install_banner_wait():
    """Have network_cli's libssh plugin connect through :func:`_open_socket` (this process only)."""
    from ansible_collections.ansible.netcommon.plugins.connection import libssh as libssh_plugin

    base = libssh_plugin.Session
    if getattr(base, "_devicevault", False):
        return

    class Session(base):
        _devicevault = True
        _devicevault_sock = None

        def connect(self, **kwargs):
            _quiet_libssh()  # Session() has just set this thread's libssh log level to TRACE
            if kwargs.get("proxycommand") or kwargs.get("fd") is not None or not kwargs.get("host"):
                return super().connect(**kwargs)
            timeout = float(kwargs.get("timeout") or 30)
            sock = _open_socket(kwargs["host"], kwargs.get("port") or 22, timeout)
            # libssh uses the socket but never closes one it was given: close() below does
            self._devicevault_sock = sock
            try:
                return super().connect(fd=sock.fileno(), **kwargs)
            except BaseException:
                self.close()  # libssh lets go of the socket first: its number may be reused at once
                raise

        def close(self):
            try:
                super().close()
            finally:
                self._release()

        def _release(self):
            sock, self._devicevault_sock = self._devicevault_sock, None
            if sock is not None:
                _close_when_device_has(sock)

    libssh_plugin.Session = Session


def _quiet_libssh():
    """libssh's log level is per thread, and every pylibssh ``Session()`` sets it to TRACE, which hands every
    libssh message to Python's logging: some 2,000 calls per device. Off, unless Ansible runs at -vvvv
    (when network_cli turns libssh's debug log on itself)."""
    from ansible.utils.display import Display
    from pylibsshext.logging import ANSIBLE_PYLIBSSH_NOLOG, _set_level

    if Display().verbosity < 4:
        _set_level(ANSIBLE_PYLIBSSH_NOLOG)


def fetch_one(conn, commands):
    """Connect, send ``commands`` in order, close: ``{"outputs": [...]}`` or ``{"failed": True, "msg": ...}``."""
    started = time.monotonic()
    outputs = []
    result = None
    try:
        _deadline.start(conn.get_option("persistent_connect_timeout"))
        conn._connect()  # SSH, the terminal plugin's prompt and set-up, privilege (become/enable)
        command_timeout = conn.get_option("persistent_command_timeout")
        for command in commands:
            _deadline.start(command_timeout)
            out = conn.get(command=command)  # the cliconf plugin: its prompts and error patterns
            if out is None:
                # network_cli over libssh takes a closed socket for the end of the reply: nothing came back
                result = {"failed": True, "command": command,
                          "msg": "connection closed by the device before its output was complete"}
                break
            outputs.append(out if isinstance(out, str) else str(out))
        else:
            result = {"outputs": outputs}
    except Exception as exc:  # one device's failure is its own result
        result = {"failed": True, "msg": str(exc) or type(exc).__name__}
    finally:
        _deadline.stop()
        try:
            conn.close()
        except Exception:
            pass
    result["duration"] = round(time.monotonic() - started, 3)
    return result


class ResultWriter:
    """One JSON line per device, appended under a lock that every forked process shares."""

    def __init__(self, path):
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lock = threading.Lock()

    def write(self, host, result):
        line = (json.dumps(dict(result, host=host)) + "\n").encode("utf-8", "surrogateescape")
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(self._fd, view):]
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self):
        os.close(self._fd)


def parse_result_line(line):
    """``(host, result)`` of one line of a results file, or None for a line cut short by a dying process."""
    try:
        record = json.loads(line)
        return record.pop("host"), record
    except (ValueError, KeyError, AttributeError):
        return None


def read_results(path):
    """``{host: result}`` from a results file (a line cut short by a dying process is skipped)."""
    found = {}
    try:
        with open(path, "rb") as handle:
            for line in handle:
                parsed = parse_result_line(line)
                if parsed is not None:
                    found[parsed[0]] = parsed[1]
    except FileNotFoundError:
        pass
    return found


def _run_threads(names, prepare, threads, writer):
    """Set up each device (``prepare(name)`` -> ``(connection, commands)``, in this thread: Ansible's templating
    and plugin set-up are not thread-safe) and hand it at once to a pool of ``threads`` that fetch it, so
    set-up and fetching overlap; a device whose set-up fails gets that failure as its result. Each result is
    written by the thread that fetched it, as soon as it is done (a hung device holds back no other's)."""

    def fetch_and_write(name, conn, commands):
        writer.write(name, fetch_one(conn, commands))

    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="devicevault-fetch") as pool:
        futures = []
        for name in names:
            try:
                conn, commands = prepare(name)
            except Exception as exc:
                writer.write(name, {"failed": True, "msg": str(exc) or type(exc).__name__})
                continue
            futures.append(pool.submit(fetch_and_write, name, conn, commands))
        for future in futures:
            future.result()  # fetch_one returns its failures; anything else ends this process's share


def process_count(requested, forks, devices):
    """How many processes fetch a batch: ``requested`` if set (> 0), else one per
    :data:`HANDSHAKES_PER_PROCESS` concurrent devices; never more than ``forks`` or the devices."""
    wanted = int(requested or 0) or -(-forks // HANDSHAKES_PER_PROCESS)
    return max(1, min(wanted, forks, devices))


def die_with_parent(parent=None):
    """Have the kernel SIGKILL this process when the process that started it dies (Linux): the task's
    process goes with a killed ``ansible-playbook`` (the OOM killer, a job's hard limit), and the fetch
    processes with the task's, so no fetch goes on unseen with no one to read its results. ``parent``: the
    starting process's pid as it knew it before the fork (this process then dies at once if that one died
    in between); None takes the current parent (a process this code did not fork). Also what DeviceVault's
    RQ worker does in its work horse (``jobs.worker``)."""
    parent = os.getppid() if parent is None else parent
    if _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # it died before the call
        os._exit(1)


def run_batch(names, prepare, forks, processes, results_path):
    """Fetch every device of ``names`` (``prepare(name)`` -> its ``(connection, commands)``), at most ``forks``
    at once, over ``processes`` forked processes (1: in this process), each setting up its own share; each
    result goes to ``results_path`` as it comes."""
    if not names:
        return
    forks = max(1, min(forks, len(names)))
    processes = max(1, min(processes, forks))
    die_with_parent()
    install_banner_wait()
    writer = ResultWriter(results_path)
    try:
        if processes == 1:
            _run_threads(names, prepare, forks, writer)
            return
        shares = [names[i::processes] for i in range(processes)]
        threads = [forks // processes + (i < forks % processes) for i in range(processes)]
        gc.collect()
        gc.freeze()  # the children leave the parent's objects alone: fewer copied pages per child
        children = {}
        try:
            for share, count in zip(shares, threads):
                me = os.getpid()
                pid = os.fork()
                if pid == 0:  # child
                    code = 0
                    try:
                        die_with_parent(me)
                        _run_threads(share, prepare, count, writer)
                    except BaseException:
                        code = 1
                    finally:
                        os._exit(code)
                children[pid] = share
        finally:
            gc.unfreeze()
            for pid in children:
                status = os.waitpid(pid, 0)[1]
                if status:
                    done = read_results(results_path)
                    how = ("signal %d" % os.WTERMSIG(status) if os.WIFSIGNALED(status)
                           else "status %d" % os.WEXITSTATUS(status))
                    for name in children[pid]:
                        if name not in done:
                            writer.write(name, {"failed": True, "msg": "the fetch process ended (%s) before "
                                                                       "this device was done" % how})
    finally:
        writer.close()
