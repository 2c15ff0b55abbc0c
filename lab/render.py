"""What a lab device prints for its configuration: the stored state with its volatile markers filled in
(timestamps, uptimes, counters, re-encrypted secrets) and the personality's transform applied.

Shared by the SSH server (:mod:`lab.server`, what a session prints) and :class:`lab.control.LabControl`
(``running_config``), which therefore do not import each other.
"""
from __future__ import annotations

import datetime as _dt
import random
import re
import time
from functools import lru_cache

from .configgen import VOL_MARK, build_model
from .personality import Personality, load_personalities

VOL_RE = re.compile(re.escape(VOL_MARK.format("\x00")).replace("\x00", r"(\w+)"))


@lru_cache(maxsize=512)
def _model(host: str, site: str, pname: str):
    p = load_personalities()[pname]
    return build_model(host, site, p.get("model") or {})


def base_context(st: dict, p: Personality, **extra) -> dict:
    now = _dt.datetime.now(_dt.timezone.utc)
    ctx = {"hostname": st["host"], "now": now, "state": st, "p": p.get("facts") or {},
           "m": _model(st["host"], st.get("site", "lab"), p.name),
           "changed_at": _dt.datetime.fromtimestamp(st.get("changed_at", time.time()), _dt.timezone.utc),
           "saved_at": _dt.datetime.fromtimestamp(st.get("saved_at", time.time()), _dt.timezone.utc),
           "changed_by": st.get("changed_by", "admin"), "rnd": random.Random(), "user": "admin",
           "level": "user"}
    ctx.update(extra)
    return ctx


def render_config(st: dict, which: str, p: Personality, ctx: dict | None = None,
                  transform: str | None = None, command: str = "") -> str:
    """Text of ``st[which]`` ('running'/'startup') as printed: volatile markers filled, transform applied."""
    ctx = ctx or base_context(st, p)
    vol = p.get("volatile") or {}
    text = st[which]
    text = VOL_RE.sub(lambda mo: p.render(vol.get(mo.group(1), ""), ctx), text)
    if transform:
        text = TRANSFORMS[transform](text, command, p)
    return text


def junos_set(text: str, command: str, p: Personality) -> str:
    """Junos curly-brace configuration -> ``| display set`` lines."""
    out, path = [], []
    for raw in text.split("\n"):
        line = re.sub(r"\s+## .*$", "", raw).strip()
        if not line or line.startswith("#") or line.startswith("/*"):
            continue
        if line.endswith("{"):
            path.append(line[:-1].strip())
        elif line == "}":
            if path:
                path.pop()
        elif line.endswith(";"):
            stmt = line[:-1]
            prefix = " ".join(["set"] + path)
            mo = re.match(r"^(.*?)\s*\[\s*(.*?)\s*\]$", stmt)
            if mo:
                for v in mo.group(2).split():
                    out.append(f"{prefix} {mo.group(1)} {v}".replace("  ", " "))
            else:
                out.append(f"{prefix} {stmt}")
    return "\n".join(out) + "\n"


def routeros_export(text: str, command: str, p: Personality) -> str:
    """RouterOS ``/export [terse] [show-sensitive]`` from the stored (grouped, sensitive) export."""
    opts = set(command.split()[1:])
    sens = p.get("sensitive_keys") or []
    out, section = [], None
    for line in text.split("\n"):
        if "show-sensitive" not in opts and sens and not line.startswith("#"):
            line = re.sub(r"\b(%s)=(\"[^\"]*\"|\S+)" % "|".join(map(re.escape, sens)), "", line)
            line = re.sub(r"  +", " ", line).rstrip()
        if "terse" in opts:
            if line.startswith("/"):
                section = line
                continue
            if section and line and not line.startswith("#"):
                line = f"{section} {line}"
        out.append(line)
    return "\n".join(out)


TRANSFORMS = {"junos_set": junos_set, "routeros_export": routeros_export}
