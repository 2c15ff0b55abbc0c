"""Tables of the index.

A *version* is one distinct configuration of one device (as normalised: volatile lines removed), created by
the run that first saw it. Each version is kept on one or more storage targets; each target's copy is a
*copy* row (backend, ref, status). ``device_results`` holds the outcome of every device in every run, less what
index retention removed (``storage.index.retention``: old results that made no version; their counts stay on
the run).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import ClassVar

from .statuses import CopyStatus, DeviceStatus, RunStatus  # noqa: F401 - the index's vocabulary
from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything in the index is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


class Base(DeclarativeBase):
    pass


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True, index=True)
    group_name: Mapped[str] = mapped_column(String(255), default="", index=True)
    platform: Mapped[str] = mapped_column(String(64), default="")
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_status: Mapped[str] = mapped_column(String(32), default="")
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_success_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_change_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    #: since when the device has had no successful backup for too long (None = not stale)
    stale_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: running configuration differs from the startup configuration (None = unknown / no startup on the
    #: platform), as of the newest backup; since when
    unsaved: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    unsaved_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: since when the device has been missing from the inventory (None = in it), and when it was retired for
    #: it (None = not retired): ``jobs.ops.retire`` sets and clears both
    absent_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True, index=True)

    versions: Mapped[list["Version"]] = relationship(back_populates="device", order_by="Version.id")


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    status: Mapped[str] = mapped_column(String(32), default=RunStatus.RUNNING.value)
    selector: Mapped[str] = mapped_column(String(512), default="all")
    requested_by: Mapped[str] = mapped_column(String(255), default="")
    total: Mapped[int] = mapped_column(Integer, default=0)
    targets: Mapped[str] = mapped_column(String(255), default="")
    #: the Ansible inventory the run was started with ("" for runs the index learnt of from a device result)
    inventory: Mapped[str] = mapped_column(String(1024), default="", server_default="")
    #: the run's device results removed by index retention (``storage.index.retention``), per outcome: the
    #: run's counts are the rows left plus these (a ``changed`` result is never removed; migration 0012)
    pruned_unchanged: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    pruned_failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    pruned_skipped: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    results: Mapped[list["DeviceResultRow"]] = relationship(back_populates="run")

    #: the counter of each status a pruned result can have (``device_results.status`` -> column)
    PRUNED_COLUMNS: ClassVar[dict[str, str]] = {DeviceStatus.UNCHANGED.value: "pruned_unchanged",
                                                DeviceStatus.FAILED.value: "pruned_failed",
                                                DeviceStatus.SKIPPED_LOCKED.value: "pruned_skipped"}

    def pruned(self) -> dict[str, int]:
        """Results removed by retention, per status (``device_results.status`` values)."""
        return {status: getattr(self, column) or 0 for status, column in self.PRUNED_COLUMNS.items()}


class DeviceResultRow(Base):
    __tablename__ = "device_results"
    #: a run's results per outcome, from the index alone (the dashboard's failures per day; migration 0008)
    __table_args__ = (Index("ix_device_results_run_status", "run_id", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[str] = mapped_column(String(128), unique=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    status: Mapped[str] = mapped_column(String(32))
    timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str] = mapped_column(Text, default="")
    error_kind: Mapped[str] = mapped_column(String(64), default="")
    log: Mapped[str] = mapped_column(Text, default="")
    sha256: Mapped[str] = mapped_column(String(64), default="")
    size: Mapped[int] = mapped_column(Integer, default=0)
    #: changed devices: the targets of the device's location (comma separated): the copies the run waits for
    targets: Mapped[str] = mapped_column(String(512), default="")
    #: running != startup at this backup (None: unknown); who last changed the config, per the device
    unsaved: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    changed_by: Mapped[str] = mapped_column(String(255), default="")

    run: Mapped[Run] = relationship(back_populates="results")
    device: Mapped[Device] = relationship()


class Version(Base):
    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("device_id", "run_id", name="uq_version_device_run"),
                      #: first backups and changes per day from the index alone (migration 0009)
                      Index("ix_versions_created_device", "created_at", "device_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)  # of the text as stored
    #: sha256 of the masked view: what "same or new" is decided on (differs from ``sha256`` only with
    #: ``devicevault_secrets: keep``; rows from before 0005 have ``sha256``)
    view_sha256: Mapped[str] = mapped_column(String(64), default="")
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    author: Mapped[str] = mapped_column(String(255), default="")

    device: Mapped[Device] = relationship(back_populates="versions")
    copies: Mapped[list["Copy"]] = relationship(back_populates="version", order_by="Copy.id")


class Copy(Base):
    """One storage target's copy of a version."""

    __tablename__ = "copies"
    __table_args__ = (UniqueConstraint("version_id", "backend", name="uq_copy_version_backend"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), index=True)
    backend: Mapped[str] = mapped_column(String(32))
    ref: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(32), index=True)
    task_id: Mapped[str] = mapped_column(String(160), unique=True)
    stored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    error: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    key_id: Mapped[str] = mapped_column(String(64), default="")  # encryption key of the copy ("" = plain)
    checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # last verify
    #: the raw device output kept next to this version on this (encrypted) target ("" = none)
    raw_ref: Mapped[str] = mapped_column(Text, default="")

    version: Mapped[Version] = relationship(back_populates="copies")


class SearchText(Base):
    """The newest configuration of a device as search reads it (normalised, masked), written by the index
    consumer with each new version (``storage.index.search``). On SQLite the FTS5 trigram table
    ``search_fts`` indexes ``body`` (triggers of migration 0007); on PostgreSQL a pg_trgm GIN index."""

    __tablename__ = "search_texts"

    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), primary_key=True, autoincrement=False)
    version_id: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ComplianceResult(Base):
    """A device's standing against one compliance rule, as of the version last checked (``jobs.compliance``
    evaluates, ``storage.index.compliance`` reads and writes). One row per (device, rule the device is in scope
    of); ``lines`` is a JSON list of what breaks the rule (masked): ``{"line", "problem": "missing" |
    "forbidden", "section"}``. ``published`` is the standing last announced on ``compliance:changed``
    (``violated`` / ``resolved``; "" never), so an announcement lost with a process is made by the next check."""

    __tablename__ = "compliance_results"
    __table_args__ = (UniqueConstraint("device_id", "rule", name="uq_compliance_device_rule"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    rule: Mapped[str] = mapped_column(String(255))
    version_id: Mapped[int] = mapped_column(Integer)
    violated: Mapped[bool] = mapped_column(Boolean, index=True)
    lines: Mapped[str] = mapped_column(Text, default="[]")
    checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: since when the device has been in this standing (violated or not)
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    published: Mapped[str] = mapped_column(String(16), default="")

    device: Mapped[Device] = relationship()


class Schedule(Base):
    """A recurring backup of one inventory group ("" = every device) on a 5-field cron expression.

    Managed by ``jobs/ops/schedules.py``; ``devicevault scheduler`` turns every enabled row into an rq-scheduler
    cron job. ``last_run_at`` is when it last fired, ``last_run_id`` the run it started, ``last_error`` why
    the last firing started no run ("" when it did).
    """

    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255), unique=True, nullable=True)  # optional label
    group: Mapped[str] = mapped_column("group_name", String(255), default="")  # "" = every device
    cron: Mapped[str] = mapped_column(String(255))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)  # definition changed
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_run_id: Mapped[str] = mapped_column(String(64), default="")
    last_error: Mapped[str] = mapped_column(Text, default="")
