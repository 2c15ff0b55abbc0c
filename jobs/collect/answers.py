"""A device's answers judged by their content, before they are normalised into a version.

The rule is the platform loader's, written once for DeviceVault's jobs and the collection alike
(``judge_answers`` in the collection's ``plugins/plugin_utils/platform_file.py``; the data is each command's
``expect``/``keep`` and the ``errors`` of the platform file):

- a **configuration command** whose answer is not a configuration fails the device at once, quoting the
  device's own line, and is not retried (asking again gets the same answer): an empty reply is
  :class:`~jobs.errors.NoConfiguration`, anything else (an error in any wording, a bare prompt)
  :class:`~jobs.errors.CommandRejected`. A configuration that starts like one but is not whole stays
  :class:`~jobs.errors.IncompleteOutput` (transient), decided by normalising (``complete``);
- an **identity command** (``comment: true``, e.g. ``show version``) whose answer is not its output gives a
  warning, and the version is stored without that command's header lines;
- a **startup** answer that is not a configuration (empty, rejected) leaves "unsaved" unknown.

This module names the device and turns the loader's refusal into DeviceVault's errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jobs.collect.platforms import Platform, loader
from jobs.errors import CommandRejected, DeviceError, NoConfiguration

_ERRORS: dict[str, type[DeviceError]] = {"command_rejected": CommandRejected, "no_configuration": NoConfiguration}


@dataclass
class Answers:
    """The outputs to normalise (a failing identity answer left empty, an unusable startup answer left out)
    and the warnings to report with the device's result."""

    outputs: list[str]
    warnings: list[str] = field(default_factory=list)


def check_answers(device: str, platform: Platform, outputs: list[str]) -> Answers:
    """``outputs`` (the platform's commands, then the startup command) judged; :class:`CommandRejected` or
    :class:`NoConfiguration` naming ``device`` when a configuration command's answer is not a configuration."""
    try:
        judged, warnings = loader.judge_answers(platform, outputs)
    except loader.AnswerRefused as exc:
        raise _ERRORS.get(exc.kind, CommandRejected)(device, exc.cause) from None
    return Answers(judged, warnings)
