"""Data-driven device personalities (``lab/personalities/<name>.yml``).

Schema (all text values are Jinja2 templates rendered with the session
context: ``hostname``, ``user``, ``now`` (aware UTC datetime), ``level``,
``command``, ``args`` (regex groups), ``state`` (device state dict), ``m`` (config
model), ``p`` (the ``facts`` mapping), ``size`` (config size, for config commands)):

    name: ios                         # personality name = the name of the platform file it simulates
    template: ios.j2                  # config template (lab/templates), or inline:
    config_template: '...'            # Jinja2 text of the configuration (m = model, p = facts)
    inventory: {ansible_become: true, ...}   # more group_vars of its hosts (generate_inventory; the
                                      # platform file gives ansible_network_os / devicevault_platform)
    facts: {...}                      # static values for templates (version, model, image ...)
    model: {interfaces: [{fmt: 'GigabitEthernet1/0/{}', start: 1, count: 24}]}
    banner: '...'                     # sent once after login, before the first prompt
    login_level: user                 # level after login: user | enable
    username_suffix_sep: '+'          # optional: strip 'admin+cet1024w' -> 'admin' (RouterOS)
    prompts: {user: '{{hostname}}>', enable: '{{hostname}}#', config: '{{hostname}}(config)#'}
    enable:                           # optional privilege escalation
      password_prompt: 'Password: '
      bad_password: '% Bad passwords'
    volatile: {name: 'template'}      # values of {{ vol('name') }} markers in the config
    change: {after: 'regex', line: 'template with {{ seq }} {{ a }} {{ b }}'}
    commands:                         # first match wins; matched against the stripped line
      - match: 'regex'                # re.fullmatch, case-sensitive
        levels: [enable, config]      # allowed levels (default: all)
        output: 'template'            # static output
        config: running|startup       # print a configuration
        transform: junos_set|routeros_export   # optional config transform
        prefix: 'template'            # printed before a config
        action: enable|save|set_level|exit|capture|apply    # side effect
        to: config                    # for set_level (and the level after capture/apply)
        # capture: the lines typed next are kept (printing ``prompt`` after each, or nothing) until one
        # fully matches ``until`` (or a Ctrl-D when ``until`` is "\x04"); ``drop`` lines are not kept; the
        # text then becomes the device file ``file`` (a template: ``{{ args.file }}``), or with ``apply:
        # replace|merge`` the running configuration at once; ``done`` is printed at the end
        # apply: the device file ``file`` becomes the running configuration (``how``: replace|merge;
        # ``remove``: the file goes; ``missing``: the answer when there is no such file)
        confirm: 'Destination filename [startup-config]? '   # ask, read one line, then act
    restore:                          # what a pushed configuration becomes (lab/apply.py): pushed lines
      volatile: {name: 'regex'}       #   matching one become that volatile marker again
      merge: routeros_terse           #   how a merge merges (lab/apply.py MERGES; default line)
      last: end                       #   the line the device ends its configuration with itself
    error: 'template'                 # reply to anything unmatched (vars: caret, command)
    denied: 'template'                # optional reply when a command's level is wrong (default: error)
    newline: "\r\n"
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import jinja2
import yaml

from .configgen import jinja_env

PERSONALITIES = Path(__file__).with_name("personalities")
log = logging.getLogger("lab.personality")


@dataclass
class Command:
    regex: re.Pattern
    spec: dict


@dataclass
class Personality:
    name: str
    data: dict
    commands: list = field(default_factory=list)
    _tpl_cache: dict = field(default_factory=dict)

    def tpl(self, text: str) -> jinja2.Template:
        t = self._tpl_cache.get(text)
        if t is None:
            env = jinja_env()
            t = self._tpl_cache[text] = env.from_string(text)
        return t

    def render(self, text: str | None, ctx: dict) -> str:
        if not text:
            return ""
        return self.tpl(text).render(**ctx)

    def get(self, key, default=None):
        return self.data.get(key, default)

    def match(self, line: str, level: str | None = None):
        """The first command whose regex matches the line and whose ``levels`` allow ``level``; else the
        first whose regex matches (the server then answers ``denied``), else ``(None, None)``. So one word
        such as ``exit`` can leave config mode in one entry and log out in another."""
        first = None
        for c in self.commands:
            mo = c.regex.fullmatch(line)
            if mo:
                levels = c.spec.get("levels")
                if level is None or not levels or level in levels:
                    return c, mo
                first = first or (c, mo)
        return first or (None, None)


def _load(path: Path) -> Personality:
    data = yaml.safe_load(path.read_text())
    p = Personality(name=data.get("name", path.stem), data=data)
    for c in data.get("commands", []):
        p.commands.append(Command(re.compile(c["match"]), c))
    p.change_after = re.compile(data["change"]["after"], re.M) if data.get("change") else None
    return p


#: a directory of extra personalities (a site's own platforms), searched after the built-in ones
EXTRA_ENV = "LAB_PERSONALITIES_DIR"


def load_personalities(extra_dir: str | None = None) -> dict[str, Personality]:
    """All personalities, keyed by name. ``extra_dir`` (default ``$LAB_PERSONALITIES_DIR``) may add or
    override some: a new platform is a YAML file there, no code."""
    return _load_all(extra_dir or os.environ.get(EXTRA_ENV) or None)


@lru_cache(maxsize=None)
def _load_all(extra_dir: str | None) -> dict[str, Personality]:
    out = {}
    dirs = [PERSONALITIES] + ([Path(extra_dir)] if extra_dir else [])
    for d in dirs:
        for f in sorted(d.glob("*.yml")):
            p = _load(f)
            out[p.name] = p
    return out


def personality_for(network_os: str, extra_dir: str | None = None, platform: str = "") -> Personality | None:
    """The personality of a host with this ``ansible_network_os`` and ``devicevault_platform``
    (``platform``): the one named like the platform file DeviceVault picks for that host, by the same rule
    (the collection's platform loader, through ``jobs.collect.platforms``); None if the lab has none."""
    from jobs.collect.platforms import platform_name

    return load_personalities(extra_dir).get(platform_name(platform, network_os))
