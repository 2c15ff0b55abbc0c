"""A device's answers judged by their content, before they are normalised into a version.

The judgement of one answer is the platform loader's (``judge_answer`` in the collection's
``plugins/plugin_utils/platform_file.py``: empty, a listed ``errors`` pattern, or none of the lines the
command's real answer holds, ``expect``/``keep`` in the platform file); this module says what each verdict
means for a backup:

- a **configuration command** whose answer is not a configuration fails the device at once, not retried
  (asking again gets the same answer), quoting the device's own line: an empty reply is
  :class:`~jobs.errors.NoConfiguration`, anything else (an error in any wording, a bare prompt)
  :class:`~jobs.errors.CommandRejected`. A configuration that starts like one but is not whole stays
  :class:`~jobs.errors.IncompleteOutput` (transient), decided by normalising (``complete``);
- an **identity command** (``comment: true``, e.g. ``show version``) whose answer is not what it should be
  gives a warning, and the version is stored without that command's header lines;
- a **startup** answer that is not a configuration (empty, rejected) leaves "unsaved" unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jobs.collect.platforms import Platform, loader
from jobs.controls import one_line
from jobs.errors import CommandRejected, NoConfiguration

#: the most of a device's line quoted in an error or a warning
QUOTE_CHARS = 200


@dataclass
class Answers:
    """The outputs to normalise (a rejected identity answer blanked, an unusable startup answer left out)
    and the warnings to report with the device's result."""

    outputs: list[str]
    warnings: list[str] = field(default_factory=list)


def quote(line: str) -> str:
    """The device's own line as it appears in a message: one line, controls escaped, at most
    :data:`QUOTE_CHARS` characters, in quotes."""
    text = one_line(line)
    if len(text) > QUOTE_CHARS:
        text = text[:QUOTE_CHARS] + "…"
    return repr(text)


def check_answers(device: str, platform: Platform, outputs: list[str]) -> Answers:
    """``outputs`` (the platform's commands, then the startup command) judged; :class:`CommandRejected` or
    :class:`NoConfiguration` when a configuration command's answer is not a configuration."""
    main, startup = platform.split_outputs(list(outputs))
    if len(main) < len(platform.commands):  # too few outputs: normalising says so
        return Answers(list(outputs))
    warnings: list[str] = []
    for index, (command, output) in enumerate(zip(platform.commands, main)):
        verdict, line = loader.judge_answer(platform, output, command.expected)
        if verdict == loader.ANSWER_OK:
            continue
        if command.comment:
            said = "nothing" if verdict == loader.ANSWER_EMPTY else quote(line)
            warnings.append(f"warning: the device answered {command.command!r} with {said}, not its output "
                            f"({platform.name}); the version has no {command.command!r} header")
            main[index] = ""
        elif verdict == loader.ANSWER_EMPTY:
            raise NoConfiguration(device, f"no configuration: the device answered {command.command!r} with nothing "
                                          f"({platform.name})")
        elif verdict == loader.ANSWER_ERROR:
            raise CommandRejected(device, f"command rejected: the device answered {command.command!r} with "
                                          f"{quote(line)} ({platform.name})")
        else:
            raise CommandRejected(device, f"command rejected: the device answered {command.command!r} with "
                                          f"{quote(line)}, which is not a configuration ({platform.name})")
    if startup is not None:
        verdict, _ = loader.judge_answer(platform, startup, platform.startup_expected)
        if verdict != loader.ANSWER_OK:  # nothing saved, or no answer: whether it is saved is unknown
            return Answers(main, warnings)
        return Answers(main + [startup], warnings)
    return Answers(main, warnings)
