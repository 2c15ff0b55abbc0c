# DeviceVault: the one reader of platform files (GPL-3.0-or-later, like the Ansible plugins it serves).
"""Platform files: what DeviceVault knows about a network OS, and the rules for reading them, written once.

Readers: this collection's ``collect`` action (the commands) and ``cli`` cliconf/terminal plugins (the
``terminal:`` section), DeviceVault's jobs (``jobs/collect/platforms.py``: normalising, the inventory) and
the simulated lab (``lab/``). The schema is in ``platforms/README.md`` beside this collection's plugins.

The rules that every reader shares live here and nowhere else:

- **where the files are**: :data:`BUILTIN_DIR`, the ``platforms/`` directory of this collection (so the
  collection is self-contained: ``ansible-galaxy collection install`` or AWX get the platforms with the
  plugins), searched after a site's own directory (:func:`search_dirs`: ``devicevault_platforms_dir``, else
  ``$DEVICEVAULT_PLATFORMS_DIR``);
- **which file a host uses** (:func:`platform_name`): ``devicevault_platform``, else the last part of
  ``ansible_network_os`` (``cisco.ios.ios`` -> ``ios``); ``devicevault.network.cli`` (this collection's own
  plugin) names no platform by itself;
- **what is sent, in which order** (:attr:`Platform.command_lines`): the ``commands`` in order, then the
  ``startup`` command last; :meth:`Platform.split_outputs` is the same rule read backwards.

Only the standard library and PyYAML (a dependency of ansible-core): this module runs inside Ansible's
processes, where DeviceVault's own Python packages are not importable, and DeviceVault loads it by file
path (``jobs/collect/platforms.py``), so it imports nothing else from the collection.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import yaml

#: the directory of a site's own platform files, searched before the built-in one
PLATFORMS_DIR_ENV = "DEVICEVAULT_PLATFORMS_DIR"
#: the inventory variable that names a host's platform file (else ``ansible_network_os`` does)
PLATFORM_VAR = "devicevault_platform"
#: the inventory/extra variable that names a site's platform directory (before ``$DEVICEVAULT_PLATFORMS_DIR``)
PLATFORMS_DIR_VAR = "devicevault_platforms_dir"
#: the network OS of this collection's data-driven plugins: the platform comes from ``devicevault_platform``
OWN_NETWORK_OS = "devicevault.network.cli"
#: the built-in platform files: ``<collection>/platforms`` (this file is ``<collection>/plugins/plugin_utils/``)
BUILTIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "platforms")
NAME_RE = re.compile(r"^[\w.\-]+$")


class PlatformError(ValueError):
    """A platform that has no file, or a file that is malformed (the message names the file and the cause)."""


@dataclass(frozen=True)
class Command:
    command: str
    #: identity output (``show version``): stored as comment lines at the top, not part of the configuration
    comment: bool = False
    #: for comment output: only lines matching one of these are kept (empty = all, after noise)
    keep: tuple = ()
    #: what a real answer holds: some line matches one of these (re.MULTILINE); an answer with none is not
    #: this command's output (an error in any wording, a bare prompt). Empty: ``keep`` stands in for it.
    expect: tuple = ()

    @property
    def expected(self) -> tuple:
        """The patterns an answer is judged by (:func:`judge_answer`): ``expect``, else ``keep``."""
        return self.expect or self.keep


@dataclass(frozen=True)
class Rewrite:
    pattern: re.Pattern
    replacement: str


@dataclass(frozen=True)
class Privilege:
    command: str
    #: network_cli compiles the prompt itself: kept as text (validated here)
    prompt: str
    check: re.Pattern  # bytes


@dataclass(frozen=True)
class Terminal:
    """The ``terminal:`` section, for this collection's ``cli`` plugins. Patterns are compiled as bytes:
    network_cli matches them against the raw bytes the device sends."""

    prompts: tuple
    errors: tuple = ()
    ansi: tuple = ()
    paging: tuple = ()
    privilege: Privilege | None = None
    logout: str = ""


@dataclass(frozen=True)
class Step:
    """One line a restore sends: ``newline`` false sends it without a line end (a Ctrl-D); ``wait`` false
    does not wait for a prompt (the device prints none: it reads input until an end line)."""

    command: str
    newline: bool = True
    wait: bool = True


#: what a platform's ``restore`` commands do to the running configuration
RESTORE_MODES = ("replace", "merge")


@dataclass(frozen=True)
class Restore:
    """The ``restore:`` section: how a stored configuration is put back on the device (DeviceVault's
    ``restore`` action sends ``begin``, then every configuration line, then ``end``)."""

    mode: str  # replace: the device ends up with exactly the configuration; merge: lines are added/changed
    begin: tuple = ()  # Steps
    end: tuple = ()  # Steps
    #: configuration lines are sent without waiting for a prompt (the device prints none while reading input)
    stream: bool = False
    #: lines of the stored configuration that are never sent (device-generated lines, comments)
    skip: tuple = ()
    #: output of any step that means it failed (re.MULTILINE), besides the platform's ``errors``
    errors: tuple = ()


@dataclass(frozen=True)
class Platform:
    name: str
    network_os: str
    commands: tuple
    startup: str = ""
    comment_prefix: str = "# "
    description: str = ""
    noise: tuple = ()
    replace: tuple = ()
    secrets: tuple = ()
    changed_by: tuple = ()
    complete: tuple = ()
    errors: tuple = ()
    terminal: Terminal | None = field(default=None, compare=False, hash=False)
    restore: Restore | None = field(default=None, compare=False, hash=False)
    source: str = field(default="", compare=False)

    @property
    def command_lines(self) -> tuple:
        """Every command a backup sends, in order: the ``commands``, then the ``startup`` command last."""
        return tuple(c.command for c in self.commands) + ((self.startup,) if self.startup else ())

    @property
    def config_commands(self) -> tuple:
        """The commands whose output is the configuration (not identity output)."""
        return tuple(c.command for c in self.commands if not c.comment)

    @property
    def startup_expected(self) -> tuple:
        """What a saved configuration (the ``startup`` answer) holds: the first configuration command's
        ``expect``."""
        return next((c.expect for c in self.commands if not c.comment and c.expect), ())

    def split_outputs(self, outputs):
        """(outputs of ``commands``, output of ``startup`` or None): :attr:`command_lines` read backwards."""
        count = len(self.commands)
        startup = outputs[count] if self.startup and len(outputs) > count else None
        return list(outputs[:count]), startup


# --------------------------------------------------------------------------- rules shared by every reader
#: :func:`judge_answer`'s verdicts
ANSWER_OK = "ok"
ANSWER_EMPTY = "empty"  # nothing but blank lines
ANSWER_ERROR = "error"  # an ``errors`` pattern matched
ANSWER_UNEXPECTED = "unexpected"  # no line matches what the command's real answer holds (``expect``/``keep``)
_FIRST_LINE = re.compile(r"[^\s][^\n]*")


def judge_answer(platform, output, expected=()):
    """What one answer of a device is, judged by its content: ``(verdict, line)``, where ``line`` is the
    device's own words to quote (the line an ``errors`` pattern matched, else its first non-blank line).

    :data:`ANSWER_EMPTY` for nothing (or only blanks); :data:`ANSWER_OK` when ``expected`` patterns are
    given and a line matches one; else :data:`ANSWER_ERROR` when an ``errors`` pattern matches, else
    :data:`ANSWER_UNEXPECTED` when ``expected`` patterns were given (an error in a wording the file does not
    list, a bare prompt, another command's output), else :data:`ANSWER_OK`. ``expected`` patterns compiled
    with re.MULTILINE are searched in the whole answer, others (``keep``) line by line."""
    text = str(output or "")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    found = _FIRST_LINE.search(text)  # (not a split: a configuration may be tens of MB)
    if found is None:
        return ANSWER_EMPTY, ""
    first = found.group(0).strip()
    if expected and _holds(text, expected):
        return ANSWER_OK, first  # (``errors`` inside a real answer are normalising's to refuse: one pass)
    for pattern in platform.errors:
        match = pattern.search(text)
        if match:
            end = text.find("\n", match.end())
            line = text[text.rfind("\n", 0, match.start()) + 1:end if end >= 0 else len(text)].strip()
            return ANSWER_ERROR, line or first
    return (ANSWER_UNEXPECTED if expected else ANSWER_OK), first


def _holds(text, patterns) -> bool:
    """Whether a line of ``text`` matches one of ``patterns`` (re.MULTILINE ones searched in the whole text,
    others line by line)."""
    lines = None
    for pattern in patterns:
        if pattern.flags & re.MULTILINE:
            if pattern.search(text):
                return True
        else:
            lines = text.split("\n") if lines is None else lines
            if any(pattern.search(ln) for ln in lines):
                return True
    return False


#: the most of a device's line quoted in a refusal or a warning
QUOTE_CHARS = 200


class AnswerRefused(ValueError):
    """A configuration command's answer is not a configuration: ``kind`` is ``command_rejected`` (an error
    in any wording, a bare prompt, another command's output) or ``no_configuration`` (an empty reply);
    ``cause`` says so, quoting the device's own line (no device name). Asking again gets the same answer."""

    def __init__(self, kind, cause):
        super().__init__(cause)
        self.kind = kind
        self.cause = cause


def quote_line(line) -> str:
    """A device's line as a message quotes it: ``repr`` (so escapes, newlines and bidi overrides show as
    ``\\x1b``, ``\\n``, ``\\u202e``), at most :data:`QUOTE_CHARS` characters."""
    line = str(line)
    return repr(line[:QUOTE_CHARS]) + ("..." if len(line) > QUOTE_CHARS else "")


def judge_answers(platform, outputs):
    """Every answer of one backup judged by :func:`judge_answer`: ``(outputs, warnings)``, the outputs to
    normalise and what to warn about; :class:`AnswerRefused` when a configuration command's answer is not
    a configuration.

    - a configuration command's failing answer refuses the backup (never retried: asking again gets the
      same answer); a configuration that starts like one but is cut short is left to ``complete``;
    - an identity command's (``comment: true``) failing answer is a warning, and that output is left out
      (the version has no header from it);
    - a startup answer that fails (judged by :attr:`Platform.startup_expected`) is left out, so whether the
      configuration is saved stays unknown.
    """
    main, startup = platform.split_outputs(list(outputs))
    if len(main) < len(platform.commands):  # too few outputs: normalising says so
        return list(outputs), []
    warnings = []
    for index, (command, output) in enumerate(zip(platform.commands, main)):
        verdict, line = judge_answer(platform, output, command.expected)
        if verdict == ANSWER_OK:
            continue
        if command.comment:
            said = "nothing" if verdict == ANSWER_EMPTY else quote_line(line)
            warnings.append("warning: the device answered %r with %s, not its output (%s); the version has no "
                            "%r header" % (command.command, said, platform.name, command.command))
            main[index] = ""
        elif verdict == ANSWER_EMPTY:
            raise AnswerRefused("no_configuration", "no configuration: the device answered %r with nothing (%s)"
                                % (command.command, platform.name))
        elif verdict == ANSWER_ERROR:
            raise AnswerRefused("command_rejected", "command rejected: the device answered %r with %s (%s)"
                                % (command.command, quote_line(line), platform.name))
        else:
            raise AnswerRefused("command_rejected", "command rejected: the device answered %r with %s, which is "
                                "not a configuration (%s)" % (command.command, quote_line(line), platform.name))
    if startup is not None and judge_answer(platform, startup, platform.startup_expected)[0] == ANSWER_OK:
        return main + [startup], warnings
    return main, warnings


def platform_name(devicevault_platform=None, network_os=None) -> str:
    """The name of a host's platform file: ``devicevault_platform`` if set, else the last part of
    ``ansible_network_os``; "" when neither names one (no network OS, or DeviceVault's own plugin
    ``devicevault.network.cli`` without ``devicevault_platform``)."""
    if devicevault_platform and str(devicevault_platform).strip():
        return str(devicevault_platform).strip()
    network_os = str(network_os or "").strip()
    if not network_os or network_os == OWN_NETWORK_OS:
        return ""
    return network_os.rsplit(".", 1)[-1]


def host_commands(devicevault_platform=None, network_os=None, platforms_dir=None) -> list:
    """What to send to a host, in order (its platform file's :attr:`Platform.command_lines`), from the
    host's variables; :class:`PlatformError` with the message a collect task reports when there is no
    platform or no usable file."""
    name = platform_name(devicevault_platform, network_os)
    if not name:
        raise PlatformError("no platform: set the host variable %s (or an ansible_network_os that names a "
                            "platform file)" % PLATFORM_VAR)
    # the file is read by the task that uses it: no separate include_vars task (and worker process) per device
    return list(load(name, platforms_dir or None).command_lines)


def search_dirs(extra_dir=None) -> list:
    """Where platform files are looked for, first match wins: ``extra_dir`` (``devicevault_platforms_dir``)
    or else ``$DEVICEVAULT_PLATFORMS_DIR`` (a site's own platforms, or overrides), then :data:`BUILTIN_DIR`."""
    extra = extra_dir or os.environ.get(PLATFORMS_DIR_ENV) or ""
    return ([os.path.abspath(str(extra))] if extra else []) + [BUILTIN_DIR]


def find(name, extra_dir=None) -> str:
    """The path of platform ``name``'s file; :class:`PlatformError` if there is none."""
    if not name or not NAME_RE.match(str(name)):
        raise PlatformError("bad platform name %r (a platform file's name without .yml)" % (name,))
    dirs = search_dirs(extra_dir)
    for directory in dirs:
        path = os.path.join(directory, "%s.yml" % name)
        if os.path.isfile(path):
            return path
    raise PlatformError("no platform file %s.yml in %s" % (name, ", ".join(dirs)))


def get(name, extra_dir=None):
    """Platform ``name`` from the first directory that has it, or None; :class:`PlatformError` if its file
    is malformed."""
    try:
        path = find(name, extra_dir)
    except PlatformError:
        return None
    return load_file(path)


def load(name, extra_dir=None) -> Platform:
    """Platform ``name``; :class:`PlatformError` (naming the directories searched) if there is none."""
    return load_file(find(name, extra_dir))


def all_platforms(extra_dir=None) -> dict:
    """Every platform by name; a file in the site's directory overrides the built-in one of that name."""
    found = {}
    for directory in reversed(search_dirs(extra_dir)):
        if os.path.isdir(directory):
            for entry in sorted(os.listdir(directory)):
                if entry.endswith(".yml"):
                    found[entry[:-4]] = load_file(os.path.join(directory, entry))
    return found


_CACHE: dict = {}


def load_file(path) -> Platform:
    """The platform file at ``path``, parsed and checked (read again only when the file changes)."""
    path = os.path.abspath(str(path))
    try:
        st = os.stat(path)
    except OSError as exc:
        raise PlatformError("%s: cannot read platform file: %s" % (path, exc))
    key = (st.st_mtime_ns, st.st_size)
    cached = _CACHE.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    platform = _parse(path)
    _CACHE[path] = (key, platform)
    return platform


# --------------------------------------------------------------------------- parsing
def _compile(path, key, values, flags=0, as_bytes=False) -> tuple:
    if values is None:
        return ()
    if isinstance(values, str) and as_bytes:
        values = [values]
    if not isinstance(values, list):
        raise PlatformError("%s: '%s' must be a list of regular expressions" % (path, key))
    compiled = []
    for value in values:
        text = str(value)
        try:
            compiled.append(re.compile(text.encode("utf-8", "surrogateescape") if as_bytes else text, flags))
        except re.error as exc:
            raise PlatformError("%s: bad regular expression in '%s': %r: %s" % (path, key, value, exc))
    return tuple(compiled)


def _commands(path, values) -> tuple:
    if not isinstance(values, list) or not values:
        raise PlatformError("%s: 'commands' must be a non-empty list" % path)
    out = []
    for value in values:
        if isinstance(value, str) and value:
            out.append(Command(value))
        elif isinstance(value, dict) and value.get("command"):
            out.append(Command(str(value["command"]), bool(value.get("comment", False)),
                               _compile(path, "keep", value.get("keep")),
                               _compile(path, "expect", value.get("expect"), re.MULTILINE)))
        else:
            raise PlatformError("%s: each command is a string or a mapping with 'command': %r" % (path, value))
    if all(c.comment for c in out):
        raise PlatformError("%s: at least one command must be the configuration (comment: false)" % path)
    return tuple(out)


def _rewrites(path, values) -> tuple:
    if values is None:
        return ()
    if not isinstance(values, list):
        raise PlatformError("%s: 'replace' must be a list of {pattern, with} mappings" % path)
    out = []
    for value in values:
        if not isinstance(value, dict) or "pattern" not in value or "with" not in value:
            raise PlatformError("%s: each 'replace' entry needs 'pattern' and 'with': %r" % (path, value))
        (pattern,) = _compile(path, "replace", [value["pattern"]])
        out.append(Rewrite(pattern, str(value["with"])))
    return tuple(out)


def _named(path, key, patterns, group) -> None:
    for pattern in patterns:
        if group not in pattern.groupindex and pattern.groups < 1:
            raise PlatformError("%s: '%s' pattern %r needs a group named '%s'" % (path, key, pattern.pattern, group))


def _command_list(path, key, values) -> tuple:
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise PlatformError("%s: terminal.%s must be a list of commands" % (path, key))
    return tuple(values)


def _terminal(path, term):
    if term is None:
        return None
    if not isinstance(term, dict) or not term.get("prompts"):
        raise PlatformError("%s: 'terminal' must be a mapping with 'prompts'" % path)
    privilege = None
    priv = term.get("privilege")
    if priv:
        if not isinstance(priv, dict) or not all(priv.get(k) for k in ("command", "prompt", "check")):
            raise PlatformError("%s: terminal.privilege needs 'command', 'prompt' and 'check'" % path)
        _compile(path, "terminal.privilege.prompt", [priv["prompt"]], as_bytes=True)
        privilege = Privilege(str(priv["command"]), str(priv["prompt"]),
                              _compile(path, "terminal.privilege.check", [priv["check"]], as_bytes=True)[0])
    return Terminal(
        prompts=_compile(path, "terminal.prompts", term.get("prompts"), as_bytes=True),
        errors=_compile(path, "terminal.errors", term.get("errors"), re.MULTILINE, as_bytes=True),
        ansi=_compile(path, "terminal.ansi", term.get("ansi"), as_bytes=True),
        paging=_command_list(path, "paging", term.get("paging")),
        privilege=privilege,
        logout=str(term.get("logout") or ""),
    )


def _steps(path, key, values) -> tuple:
    if values is None:
        return ()
    if not isinstance(values, list):
        raise PlatformError("%s: restore.%s must be a list of commands" % (path, key))
    out = []
    for value in values:
        if isinstance(value, str) and value:
            out.append(Step(value))
        elif isinstance(value, dict) and value.get("command"):
            out.append(Step(str(value["command"]), bool(value.get("newline", True)), bool(value.get("wait", True))))
        else:
            raise PlatformError("%s: each restore.%s entry is a command or {command, newline, wait}: %r"
                                % (path, key, value))
    return tuple(out)


def _restore(path, data):
    if data is None:
        return None
    if not isinstance(data, dict) or data.get("mode") not in RESTORE_MODES:
        raise PlatformError("%s: 'restore' must be a mapping with 'mode' one of %s" % (path, ", ".join(RESTORE_MODES)))
    return Restore(
        mode=str(data["mode"]),
        begin=_steps(path, "begin", data.get("begin")),
        end=_steps(path, "end", data.get("end")),
        stream=bool(data.get("stream", False)),
        skip=_compile(path, "restore.skip", data.get("skip")),
        errors=_compile(path, "restore.errors", data.get("errors"), re.MULTILINE),
    )


def _parse(path) -> Platform:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise PlatformError("%s: cannot read platform file: %s" % (path, exc))
    if not isinstance(data, dict) or not data.get("commands"):
        raise PlatformError("%s: a platform file needs 'name', 'network_os' and a list of 'commands'" % path)
    platform = Platform(
        name=str(data.get("name") or os.path.splitext(os.path.basename(path))[0]),
        network_os=str(data.get("network_os", "")),
        description=str(data.get("description", "")),
        commands=_commands(path, data["commands"]),
        startup=str(data.get("startup") or ""),
        comment_prefix=str(data.get("comment_prefix", "# ")),
        noise=_compile(path, "noise", data.get("noise")),
        replace=_rewrites(path, data.get("replace")),
        secrets=_compile(path, "secrets", data.get("secrets")),
        changed_by=_compile(path, "changed_by", data.get("changed_by")),
        complete=_compile(path, "complete", data.get("complete"), re.MULTILINE),
        errors=_compile(path, "errors", data.get("errors"), re.MULTILINE),
        terminal=_terminal(path, data.get("terminal")),
        restore=_restore(path, data.get("restore")),
        source=path,
    )
    _named(path, "secrets", platform.secrets, "secret")
    _named(path, "changed_by", platform.changed_by, "user")
    return platform
