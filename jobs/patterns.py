"""RE2 patterns (``google-re2``): matching takes time linear in the text, whatever the pattern, so a pattern
someone typed (a portal search, a compliance rule) can never pin a process. The one place that compiles them
with DeviceVault's options."""

from __future__ import annotations

from typing import Any

import re2

#: RE2's memory budget for one pattern (bytes)
PATTERN_MEMORY = 8 << 20


class PatternError(ValueError):
    """A pattern RE2 cannot compile; ``reason`` is RE2's own words."""

    def __init__(self, pattern: str, reason: str):
        self.pattern, self.reason = pattern, reason
        super().__init__(f"invalid regular expression {pattern!r}: {reason}")


def options(*, case_sensitive: bool = True, literal: bool = False) -> Any:
    found = re2.Options()
    found.case_sensitive = case_sensitive
    found.literal = literal
    found.max_mem = PATTERN_MEMORY
    found.log_errors = False
    return found


def compile_re2(pattern: str, *, case_sensitive: bool = True, literal: bool = False) -> Any:
    """``pattern`` compiled by RE2 (``literal``: the text itself). Raises :class:`PatternError`."""
    try:
        return re2.compile(pattern, options(case_sensitive=case_sensitive, literal=literal))
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise PatternError(pattern, reason) from None
