"""Turn what a device printed into the text DeviceVault hashes, stores and diffs (the *version*).

The one implementation lives in DeviceVault's Ansible collection (``plugins/plugin_utils/normalize.py`` of
``playbooks/collections/ansible_collections/devicevault/network/``), so the collection's actions show,
register and write exactly what DeviceVault stores, and stay self-contained when installed elsewhere. This
module loads it by path (:func:`jobs.collect.platforms.collection_module`, as the platform loader and the
batch fetch are loaded) and names the device in the errors: :class:`~jobs.errors.CommandRejected` and
:class:`~jobs.errors.IncompleteOutput`. The rules and their order are in that file's docstring.
"""

from __future__ import annotations

from jobs.collect.platforms import Platform, collection_module
from jobs.errors import CommandRejected, IncompleteOutput

_impl = collection_module("normalize")

# what the rest of DeviceVault uses of it, under the same names
SECRET_PLACEHOLDER, SecretsMode, clean_lines, to_bytes, sha256_text = (
    _impl.SECRET_PLACEHOLDER, _impl.SecretsMode, _impl.clean_lines, _impl.to_bytes, _impl.sha256_text)
_ERRORS = {"command_rejected": CommandRejected, "incomplete": IncompleteOutput}


def normalize(device: str, platform: Platform, outputs: list[str],
              secrets: SecretsMode | str = SecretsMode.MASK) -> _impl.Normalized:
    """The version of ``device`` from its command ``outputs`` (in the order of the platform's commands,
    then the startup output if the platform has a ``startup`` command); :class:`~jobs.errors.CommandRejected`
    or :class:`~jobs.errors.IncompleteOutput` naming the device when the output cannot be one."""
    try:
        return _impl.normalize(platform, outputs, secrets)
    except _impl.OutputRefused as exc:
        raise _ERRORS.get(exc.kind, IncompleteOutput)(device, exc.cause) from None
