"""Keep credentials out of logs, errors, job metadata and the index."""

from __future__ import annotations

import re
from typing import Iterable

REDACTED = "REDACTED"
# credentials that appear in Ansible's own output (e.g. -vvv connection strings or module args)
_GENERIC = [
    re.compile(r"(?i)((?:ansible_)?(?:password|passwd|pass|become_pass(?:word)?|secret|auth_pass)['\"]?\s*[:=]\s*['\"]?)([^'\"\s,}]+)"),
    re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^:/@\s]*:)([^@/\s]+)(@)"),
]


class Redactor:
    """Masks known secret values and generic ``password=...`` patterns in text."""

    def __init__(self, secrets: Iterable[str] = ()):
        self._secrets = sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True)

    def add(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted(set(self._secrets) | {s for s in secrets if s and len(s) >= 3}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        if not text:
            return text
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        text = _GENERIC[0].sub(lambda m: m.group(1) + REDACTED, text)
        text = _GENERIC[1].sub(lambda m: m.group(1) + REDACTED + m.group(3), text)
        return text
