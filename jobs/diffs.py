"""Diffs that say where: a unified diff whose every hunk header names the configuration section of its first
changed line (``@@ -10,7 +10,8 @@ interface GigabitEthernet0/1``), the way git names a function.

The one implementation: the CLI's ``devicevault diff`` and the portal's Device page both call
:func:`unified_diff`. The section is the chain of parent lines of the changed line: every earlier line with
less indentation, nearest first (IOS, NX-OS, EOS, Junos, FortiOS and the other indented configurations). A
Junos parent ending in ``{`` is chained as written (``protocols { bgp {``), others with `` > ``
(``router bgp 65000 > address-family ipv4``). Comment, blank and closing lines (``!``, ``#``, ``}``,
``exit``, ``end``, ``next``) are never parents. A top-level change has no section: the header is git's plain one.
Apart from the section the output is byte for byte :func:`difflib.unified_diff`'s.
"""

from __future__ import annotations

import difflib
from typing import Sequence

#: lines that close or separate a section, never a parent
_NOT_PARENTS = ("!", "#", "}", "exit", "end", "next", "exit-address-family", "quit", "return")
#: a section name longer than this is cut with an ellipsis (a hunk header stays one readable line)
MAX_SECTION = 160


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _is_parent(stripped: str) -> bool:
    return bool(stripped) and not stripped.startswith(_NOT_PARENTS[:3]) and stripped not in _NOT_PARENTS


def section_of(lines: Sequence[str], index: int) -> list[str]:
    """The parent lines of ``lines[index]`` (outermost first), stripped; [] for a top-level line."""
    if not 0 <= index < len(lines):
        return []
    line = lines[index].rstrip("\r\n")
    level = _indent(line)
    if not line.strip():  # a blank line belongs to the section of the line after it (or before it)
        level = min((_indent(lines[j]) for j in range(index + 1, min(len(lines), index + 3))
                     if lines[j].strip()), default=level)
    parents: list[str] = []
    for j in range(index - 1, -1, -1):
        if level == 0:
            break
        candidate = lines[j].rstrip("\r\n")
        stripped = candidate.strip()
        if not stripped:
            continue
        depth = _indent(candidate)
        if depth < level and _is_parent(stripped):
            parents.append(stripped)
            level = depth
    return parents[::-1]


def parent_indexes(lines: Sequence[str]) -> list[list[int]]:
    """For every line, the indexes of its parent lines (outermost first): :func:`section_of`'s rule for every
    line at once, in one pass (a stack of the open parents), for readers of whole configurations such as
    the compliance rules (``jobs.compliance``)."""
    stack: list[tuple[int, int]] = []  # (indent, index) of the lines that may still be parents, indents rising
    found: list[list[int]] = []
    for index, raw in enumerate(lines):
        line = raw.rstrip("\r\n")
        stripped = line.strip()
        level = _indent(line)
        if not stripped:  # a blank line belongs to the section of the line after it (as section_of)
            level = min((_indent(lines[j]) for j in range(index + 1, min(len(lines), index + 3))
                         if lines[j].strip()), default=level)
            found.append([i for depth, i in stack if depth < level] if level else [])
            continue
        found.append([i for depth, i in stack if depth < level] if level else [])
        if _is_parent(stripped):
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, index))
    return found


def section_label(parents: Sequence[str]) -> str:
    """``protocols { bgp {`` / ``router bgp 65000 > address-family ipv4`` (cut at :data:`MAX_SECTION`)."""
    text = ""
    for parent in parents:
        text += parent if not text else ((" " if text.endswith("{") else " > ") + parent)
    return text if len(text) <= MAX_SECTION else text[:MAX_SECTION - 1] + "…"


def _range(start: int, stop: int) -> str:
    """difflib's ``_format_range_unified``."""
    beginning = start + 1
    length = stop - start
    if length == 1:
        return f"{beginning}"
    if not length:
        beginning -= 1
    return f"{beginning},{length}"


def hunk_sections(old: Sequence[str], new: Sequence[str], context: int = 3) -> list[str]:
    """The section label of each hunk, in order (what :func:`unified_diff` writes after ``@@``)."""
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    return [hunk_section(old, new, group) for group in matcher.get_grouped_opcodes(context)]


def hunk_section(old: Sequence[str], new: Sequence[str], group) -> str:
    for tag, i1, i2, j1, j2 in group:
        if tag == "equal":
            continue
        if tag in ("replace", "delete"):
            return section_label(section_of(old, i1))
        return section_label(section_of(new, j1))
    return ""


def unified_diff(old: str, new: str, old_label: str, new_label: str, context: int = 3) -> str:
    """``old`` -> ``new`` as a unified diff, each hunk header naming its section (module docstring)."""
    a = old.splitlines(keepends=True)
    b = new.splitlines(keepends=True)
    out: list[str] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for group in matcher.get_grouped_opcodes(context):
        if not out:
            out += [f"--- {old_label}\n", f"+++ {new_label}\n"]
        first, last = group[0], group[-1]
        section = hunk_section(a, b, group)
        header = f"@@ -{_range(first[1], last[2])} +{_range(first[3], last[4])} @@"
        out.append(f"{header} {section}\n" if section else f"{header}\n")
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                out += [" " + line for line in a[i1:i2]]
                continue
            if tag in ("replace", "delete"):
                out += ["-" + line for line in a[i1:i2]]
            if tag in ("replace", "insert"):
                out += ["+" + line for line in b[j1:j2]]
    # difflib leaves a last line without its newline as it is; so does this
    return "".join(out)
