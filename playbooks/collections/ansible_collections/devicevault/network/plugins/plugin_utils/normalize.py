# DeviceVault: the one implementation of normalising and masking device output (GPL-3.0-or-later).
"""Turn what a device printed into the text DeviceVault hashes, stores and diffs (the *version*).

One implementation for every reader: this collection's ``collect``/``collect_batch`` actions (what a plain
``ansible-playbook`` run may show, register and write to ``backup_dir``: never the raw outputs) and
DeviceVault's jobs (``jobs/collect/normalize.py`` loads this file by path through
``jobs.collect.platforms.collection_module`` and turns :class:`OutputRefused` into its own errors).

The rules come from the platform data file (``platforms/README.md`` has the order):

1. output matching an ``errors`` pattern is refused, and the configuration outputs together must match
   every ``complete`` pattern, else they were cut short;
2. ``changed_by`` reads who last changed the configuration from the raw configuration output, else from
   the raw identity output;
3. per line, ``noise`` lines are dropped, ``replace`` rewrites volatile parts, and ``secrets`` are masked
   (a stable placeholder, so masking never makes a diff), dropped, or kept;
4. identity outputs (``comment: true``) become comment lines at the top.

The result also says whether the running configuration differs from the startup configuration
(``unsaved``), for platforms with a ``startup`` command.

Only the standard library: this runs inside Ansible's processes, where DeviceVault's packages are not
importable, and it takes a :class:`platform_file.Platform` as an argument (it imports nothing else from
the collection).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import Enum

#: Larger output than this is refused rather than stored (a device stuck printing, or the wrong command).
MAX_CONFIG_BYTES = 32 * 1024 * 1024
#: What a masked secret becomes. The same for every secret and every read, so re-encrypted secrets
#: (FortiGate ``ENC ...``) and masking itself never make a new version.
SECRET_PLACEHOLDER = "<secret hidden>"
#: the inventory variable that says what happens to secrets (:class:`SecretsMode`)
SECRETS_VAR = "devicevault_secrets"


class SecretsMode(str, Enum):
    """What happens to secrets in the stored version (inventory variable ``devicevault_secrets``)."""

    MASK = "mask"  # replaced by SECRET_PLACEHOLDER (default)
    KEEP = "keep"  # left in place: only allowed when every copy is encrypted at rest
    DROP = "drop"  # the whole line is left out


class OutputRefused(ValueError):
    """The output cannot be a version: ``kind`` is ``command_rejected`` (an ``errors`` pattern matched) or
    ``incomplete`` (cut short, empty, too large); ``cause`` says why (no device name)."""

    def __init__(self, kind, cause):
        super().__init__(cause)
        self.kind = kind
        self.cause = cause


@dataclass(frozen=True)
class Normalized:
    """One device read, normalised."""

    text: str  # the version: stored, and what the index's sha256 is of
    compare: str  # what decides "changed": the masked view (the same text unless secrets are kept)
    changed_by: str = ""  # who last changed the configuration, when the device says so
    unsaved: bool | None = None  # running != startup; None when the platform has no startup command


def _unix(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _hide(match: re.Match) -> str:
    group = "secret" if "secret" in match.re.groupindex else 1
    start, end = match.span(group)
    if start < 0:
        return match.group(0)
    offset = match.start()
    whole = match.group(0)
    return whole[: start - offset] + SECRET_PLACEHOLDER + whole[end - offset:]


def clean_lines(platform, text: str, mode: SecretsMode = SecretsMode.MASK) -> list:
    """The lines of one output with noise dropped, volatile parts rewritten and secrets handled."""
    mode = SecretsMode(mode)
    out = []
    for line in _unix(text).split("\n"):
        line = line.rstrip()
        if any(p.search(line) for p in platform.noise):
            continue
        for rewrite in platform.replace:
            line = rewrite.pattern.sub(rewrite.replacement, line)
        if mode is SecretsMode.MASK:
            for pattern in platform.secrets:
                line = pattern.sub(_hide, line)
        elif mode is SecretsMode.DROP and any(p.search(line) for p in platform.secrets):
            continue
        out.append(line)
    return out


def _trim(lines: list) -> list:
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end]


def _render(platform, outputs: list, mode: SecretsMode) -> tuple:
    """The version text, and its configuration lines alone (no identity header)."""
    header = []
    body = []
    for command, output in zip(platform.commands, outputs):
        lines = clean_lines(platform, output, mode)
        if command.comment:
            if command.keep:
                lines = [ln for ln in lines if any(p.search(ln) for p in command.keep)]
            prefix = platform.comment_prefix
            header.extend(prefix + ln for ln in lines if ln.strip())
        else:
            body.extend(lines)
    body = _trim(body)
    return "\n".join(header + body) + "\n", body


def normalize(platform, outputs: list, secrets=SecretsMode.MASK) -> Normalized:
    """The version made of the command ``outputs`` (in the order of the platform's commands, then the
    startup output if the platform has a ``startup`` command); :class:`OutputRefused` if there is none."""
    mode = SecretsMode(secrets or SecretsMode.MASK)
    outputs = [_unix(o) for o in outputs]
    count = len(platform.commands)
    main, startup = platform.split_outputs(outputs)
    size = sum(len(o.encode("utf-8", errors="surrogateescape")) for o in outputs)
    if size > MAX_CONFIG_BYTES:
        raise OutputRefused("incomplete", "output of %d bytes is larger than the %d byte limit"
                            % (size, MAX_CONFIG_BYTES))
    if len(main) < count:
        raise OutputRefused("incomplete", "got %d command outputs, the platform %s runs %d"
                            % (len(main), platform.name, count))
    config = "\n".join(o for c, o in zip(platform.commands, main) if not c.comment)
    if not config.strip():
        raise OutputRefused("incomplete", "the device returned an empty configuration")
    for command, output in zip(platform.commands, main):
        for pattern in platform.errors:
            match = pattern.search(output)
            if match:
                line = match.group(0).strip()
                raise OutputRefused("command_rejected", "the device rejected %r (%s): %r"
                                    % (command.command, platform.name, line))
    for pattern in platform.complete:
        if not pattern.search(config):
            raise OutputRefused(
                "incomplete",
                "the configuration is incomplete: the output ended early (connection closed or cut short); "
                "no match for %r" % pattern.pattern)
    # who changed it: the configuration's own record first, then the identity outputs (ASA: show version)
    identity = "\n".join(o for c, o in zip(platform.commands, main) if c.comment)
    changed_by = ""
    for line in (config + "\n" + identity).split("\n"):
        for pattern in platform.changed_by:
            match = pattern.search(line)
            if match:
                changed_by = match.group("user") if "user" in pattern.groupindex else match.group(1)
                break
        if changed_by:
            break
    text, body = _render(platform, main, mode)
    compare = text
    if mode is SecretsMode.KEEP:  # decide "changed", and compare with the startup config, on the masked view
        compare, body = _render(platform, main, SecretsMode.MASK)
    unsaved = None
    if startup is not None and not any(p.search(startup) for p in platform.errors):
        startup_mode = SecretsMode.DROP if mode is SecretsMode.DROP else SecretsMode.MASK
        saved = _trim(clean_lines(platform, startup, startup_mode))
        unsaved = body != saved
    return Normalized(text=text, compare=compare, changed_by=changed_by.strip(), unsaved=unsaved)


def secrets_mode(value) -> SecretsMode:
    """A host's ``devicevault_secrets`` as a :class:`SecretsMode` (unset: mask); ValueError naming the
    allowed values otherwise."""
    text = str(value or "").strip().lower() or SecretsMode.MASK.value
    try:
        return SecretsMode(text)
    except ValueError:
        raise ValueError("%s must be one of mask, drop, keep (not %r)" % (SECRETS_VAR, value)) from None


def to_bytes(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogateescape")


def sha256_text(text: str) -> str:
    return hashlib.sha256(to_bytes(text)).hexdigest()
