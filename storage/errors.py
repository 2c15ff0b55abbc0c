"""Exceptions raised by storage backends.

Every error is a :class:`StorageError`; the children also inherit from the
matching builtin so generic callers (``except KeyError``) keep working.
Messages name the target, the path or ref, and the cause -- never credentials.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every storage failure."""


class TargetUnavailable(StorageError, ConnectionError):
    """The storage target cannot be reached (network, permissions, missing repo)."""


class RefNotFound(StorageError, KeyError):
    """The ref does not name a stored version (unknown, malformed or deleted)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class UnsafePath(StorageError, ValueError):
    """A path would escape the storage root or is not a valid relative path."""


class IntegrityError(StorageError):
    """Stored bytes do not match their recorded checksum."""


class DecodeError(IntegrityError):
    """Stored bytes cannot be decoded: unknown key id, wrong key, altered or corrupt data.

    The message names the key id (when there is one) and the cause, never key material.
    """


class UnknownBackend(StorageError, LookupError):
    """No backend is registered under that name."""
