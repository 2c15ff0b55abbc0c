"""Control characters out of what reaches a terminal, a log line or a git commit message.

A device's output and a host name come from outside: an ANSI escape (screen clear, terminal title), a carriage
return, a newline or a bidirectional override (U+202E) in them must show as text, not act. :func:`escape_controls`
is the one rule: each such character becomes a visible escape (``\\x1b``, ``\\r``, ``\\u202e``); everything
else, tabs included, stays as it is, so ordinary text is unchanged.
"""

from __future__ import annotations

import re

#: C0 controls (not tab), DEL, C1 controls, lone surrogates (undecodable bytes kept by surrogateescape),
#: and Unicode's invisible format and direction characters (ALM, zero-width, LRM/RLM, LRE..RLO, LS/PS,
#: word joiner..PDI, BOM)
_CONTROLS = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\udc80-\udcff]")
_CONTROLS_BUT_NEWLINE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\udc80-\udcff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\x1b": "\\x1b"}


def _escape(match: re.Match[str]) -> str:
    ch = match.group(0)
    code = ord(ch)
    if ch in _NAMED:
        return _NAMED[ch]
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, as surrogateescape kept it
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control, format and direction character made visible (``keep_newlines``: line
    breaks stay, for multi-line text such as a configuration or a diff)."""
    pattern = _CONTROLS_BUT_NEWLINE if keep_newlines else _CONTROLS
    return pattern.sub(_escape, text)


def one_line(text: str) -> str:
    """``text`` as a single line with its controls visible: a host name in a log line or a commit subject."""
    return escape_controls(str(text))
