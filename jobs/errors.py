"""Exceptions of the collection side. One base, specific children that also subclass the matching builtin."""

from __future__ import annotations


class BackupError(Exception):
    """Base of every DeviceVault collection error."""

    kind = "error"


class InventoryError(BackupError, ValueError):
    """The inventory cannot be read, or a host/group named on the command line is not in it."""

    kind = "inventory"


class DeviceError(BackupError):
    """Something went wrong with one device; the message always starts with the device name."""

    kind = "device"
    #: transient errors may succeed on a retry; permanent ones will not
    transient = False

    def __init__(self, device: str, cause: str):
        self.device = device
        self.cause = cause
        super().__init__(f"{device}: {cause}")


class UnknownPlatform(DeviceError, LookupError):
    kind = "unknown_platform"


class AuthenticationFailed(DeviceError, PermissionError):
    kind = "authentication"


class DeviceTimeout(DeviceError, TimeoutError):
    kind = "timeout"
    transient = True


class ConnectionLost(DeviceError, ConnectionError):
    """The device closed or reset the connection (also: refused it)."""

    kind = "connection"
    transient = True


class CommandRejected(DeviceError):
    """The device answered with its error text instead of a configuration: a listed ``errors`` pattern, or
    any answer that does not hold what the command's real answer holds (``expect`` in the platform file)."""

    kind = "command_rejected"


class NoConfiguration(DeviceError):
    """The device answered the configuration command with nothing (an empty reply): there is no
    configuration to store, and asking again gives the same answer."""

    kind = "no_configuration"


class IncompleteOutput(DeviceError):
    """A configuration that is not whole (cut short, or too large)."""

    kind = "incomplete"
    transient = True


class FetchInterrupted(DeviceError):
    """Ansible ended before this device's result: ``ansible-playbook`` or the batch's fetch process was killed
    (the OOM killer) or crashed. Not the device's doing, so it gets another attempt."""

    kind = "interrupted"
    transient = True


class CollectionFailed(DeviceError):
    """Ansible failed for a reason none of the above describes."""

    kind = "failed"


def kind_is_transient(kind: str) -> bool:
    """Whether a device error of this ``kind`` may succeed on a retry."""
    return any(cls.kind == kind and cls.transient for cls in _all_device_errors())


def _all_device_errors() -> list[type[DeviceError]]:
    found, todo = [], [DeviceError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found
