"""Events other parts of DeviceVault (or anything else) can subscribe to, on Redis streams.

``versions:created``: exactly one entry per new version, added only after the version and its copy rows are
committed to the index (by the decider's after-commit step, ``jobs.deliver.release``), in the same atomic
step that releases the version to storage. A subscriber is a :class:`jobs.streams.group.StreamConsumer` with
its own consumer group (notifications, compliance checks, exports: a few lines, see that module) and can
rely on the index already holding the version. Fields (all strings):

``version_id`` (index id), ``device``, ``group``, ``platform``, ``run_id``, ``sha256`` (the stored text),
``view_sha256`` (the masked view, equal to ``sha256`` unless secrets are kept), ``author`` ("" when the
device does not say), ``created_at`` (ISO 8601, UTC: when the configuration was collected), ``targets``
(comma separated: where copies are being stored), ``task_id`` (the device result that made it).

The configuration text is not in the event (it may be large, and only the index and the targets hold it):
read it with ``storage.retrieve`` or ``devicevault show``. The stream keeps about the newest
``jobs.deliver.outbox.EVENTS_MAXLEN`` entries.

``compliance:changed``: one entry each time a device's standing against one compliance rule changes (checked
on a new version or on demand, ``jobs.compliance``): it newly breaks the rule, or no longer does. Added after
the result is committed to the index. Fields (all strings): ``device``, ``group``, ``platform``,
``version_id`` (the version checked), ``rule`` (the rule's name), ``state`` (``violated`` | ``resolved``),
``lines`` (a JSON list of the offending or missing lines, masked), ``checked_at`` (ISO 8601, UTC).
"""

from __future__ import annotations

from typing import Any

VERSIONS_CREATED_STREAM = "versions:created"
COMPLIANCE_CHANGED_STREAM = "compliance:changed"


def version_created(decision: Any) -> dict[str, str]:
    """The event's fields for a :class:`storage.index.records.Decision` that created a version."""
    created = decision.created_at.isoformat() if decision.created_at is not None else ""
    return {
        "version_id": str(decision.version_id),
        "device": decision.device,
        "group": decision.group,
        "platform": decision.platform,
        "run_id": decision.run_id,
        "sha256": decision.sha256,
        "view_sha256": decision.view_sha256,
        "author": decision.author,
        "created_at": created,
        "targets": ",".join(decision.targets),
        "task_id": decision.task_id,
    }
