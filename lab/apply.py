"""What a lab device does with a configuration pushed to it (DeviceVault's ``restore``): the new running
configuration, stored with its volatile markers, as the personality's ``restore:`` section says.

    restore:
      volatile:                      # a pushed line matching one becomes that volatile marker again, and
        last_change: '^! Last configuration change at '   # markers no pushed line stands for stay where
                                     # they were (the device writes such lines itself)
      merge: routeros_terse          # how `apply: merge` merges (a function of MERGES), default: line merge
      last: end                      # the line the device ends its configuration with itself

``replace`` makes the running configuration exactly the pushed text (markers as above); ``merge`` adds the
pushed lines the configuration does not have yet.
"""
from __future__ import annotations

import difflib
import re
import time

from .configgen import VOL_MARK
from .personality import Personality
from .render import VOL_RE

VERBS = ("add", "set", "remove", "unset", "enable", "disable")


def _volatile(p: Personality) -> dict[str, re.Pattern]:
    spec = (p.get("restore") or {}).get("volatile") or {}
    return {name: re.compile(pattern) for name, pattern in spec.items()}


def _with_markers(lines: list[str], old: list[str], p: Personality) -> list[str]:
    """``lines`` with pushed volatile lines turned back into markers; markers of ``old`` that no pushed line
    stands for are put back at their old place."""
    patterns = _volatile(p)
    out, seen = [], set()
    for line in lines:
        name = next((n for n, pat in patterns.items() if pat.search(line)), None)
        if name is not None and name not in seen:
            out.append(VOL_MARK.format(name))
            seen.add(name)
        elif name is None:
            out.append(line)
    kept = [line for line in old if not (VOL_RE.fullmatch(line) and VOL_RE.fullmatch(line).group(1) in seen)]
    plain = [line for line in kept if not VOL_RE.fullmatch(line)]
    places, before = [], 0  # (index in ``out``, marker): where the old configuration had it, by alignment
    for line in kept:
        if VOL_RE.fullmatch(line):
            places.append((_place(plain, before, out), line))
        else:
            before += 1
    for at, line in reversed(places):
        out.insert(at, line)
    return out


def _place(old: list[str], k: int, new: list[str]) -> int:
    """The index in ``new`` that corresponds to position ``k`` of ``old`` (lines aligned by difflib)."""
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if i1 <= k < i2:
            return j1 + (k - i1) if tag == "equal" else j1
        if k == i2 == len(old):
            return j2
    return min(k, len(new))


def line_merge(old: list[str], pushed: list[str]) -> list[str]:
    """The lines of ``old``, then every pushed line it does not have."""
    have = set(old)
    return old + [line for line in pushed if line not in have]


def routeros_terse(old: list[str], pushed: list[str]) -> list[str]:
    """RouterOS: run ``/section verb ...`` lines (``/export terse``) against the stored grouped export: an
    ``add`` the section does not have is added at its end, a ``set`` of the same item replaces the old one."""
    out = list(old)
    for line in pushed:
        tokens = line.split(" ")
        verb_at = next((i for i, t in enumerate(tokens) if t in VERBS), None)
        if not line.startswith("/") or verb_at is None:
            continue
        section, body = " ".join(tokens[:verb_at]), " ".join(tokens[verb_at:])
        try:
            start = out.index(section)
        except ValueError:
            out += [section, body]
            continue
        end = next((i for i in range(start + 1, len(out)) if out[i].startswith("/")), len(out))
        block = out[start + 1:end]
        if body in block:
            continue
        if tokens[verb_at] == "set":
            target = re.split(r" \w[\w-]*=", body, maxsplit=1)[0]
            same = [i for i, old_line in enumerate(block) if re.split(r" \w[\w-]*=", old_line, maxsplit=1)[0] == target]
            if same:
                out[start + 1 + same[0]] = body
                continue
        out.insert(end, body)
    return out


MERGES = {"line": line_merge, "routeros_terse": routeros_terse}


def apply_config(st: dict, p: Personality, text: str, how: str, user: str) -> None:
    """Make ``text`` (as pushed) the running configuration of the device state ``st`` (``how``: replace or
    merge); the change is the session user's, now."""
    old = st["running"].rstrip("\n").split("\n")
    pushed = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while pushed and not pushed[-1]:
        pushed.pop()
    last = (p.get("restore") or {}).get("last")
    if how == "replace":
        lines = _with_markers(pushed, old, p)
        if last and (not lines or lines[-1] != last):
            lines.append(last)
    else:
        merge = MERGES[(p.get("restore") or {}).get("merge") or "line"]
        lines = merge(old, [line for line in pushed if line and not line.startswith("#")])
    st["running"] = "\n".join(lines).rstrip("\n") + "\n"
    st["changed_at"] = time.time()
    st["changed_by"] = user
