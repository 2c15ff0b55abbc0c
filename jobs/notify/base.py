"""The nouns every part of ``jobs.notify`` shares: its errors and a channel's configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobs.errors import BackupError


class NotifyError(BackupError):
    """Base of the notification errors."""

    kind = "notify"


class RulesError(NotifyError, ValueError):
    """The rules file cannot be used; the message names the file and the cause."""

    kind = "notify_rules"


@dataclass(frozen=True)
class ChannelConfig:
    """One channel of the file: its name, type, options (secrets resolved from the environment) and the
    delivery policy of its queue."""

    name: str
    type: str
    options: dict[str, Any]
    max_tries: int = 8
    retry_base: float = 30.0
    retry_max: float = 3600.0

    def __repr__(self) -> str:  # options may hold resolved secrets
        return f"ChannelConfig(name={self.name!r}, type={self.type!r})"
