"""``devicevault export``: the whole network's configuration as it was at one moment, as one ``.tar.gz``
(``storage/snapshot.py`` makes and checks the archive)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from .common import guard, index_sessions, load_settings, storage_layout


def _moment(text: str) -> datetime:
    """An ISO 8601 time (``storage.snapshot.parse_moment``); without a zone it is UTC."""
    from storage.snapshot import SnapshotError, parse_moment

    try:
        return parse_moment(text)
    except SnapshotError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("export")
@click.option("--at", "at_text", metavar="TIME", help="the moment: ISO 8601, UTC unless it names a zone")
@click.option("--run", "run_id", metavar="RUN_ID", help="the moment that run finished")
@click.option("--group", "groups", multiple=True, help="only devices of this storage group (repeatable)")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="the archive to write")
@click.option("--verify", "verify", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="check an archive against its manifest instead")
@guard
def export(at_text, run_id, groups, output, verify) -> None:
    """Every device's configuration as it was at a moment (its newest version at or before it), as a
    .tar.gz laid out <group>/<host>.cfg with a MANIFEST.json (device, version, sha256, time, author);
    ``--verify FILE`` checks one. Exit status 1 when a device's copies could not be read or an archive does
    not verify."""
    from storage.snapshot import SnapshotError, run_moment, verify_snapshot, versions_at, write_snapshot

    if verify is not None:
        try:
            manifest = verify_snapshot(verify)
        except SnapshotError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"{verify}: ok, {len(manifest['devices'])} device(s) as at {manifest['at']}")
        return
    if bool(at_text) == bool(run_id) or output is None:
        raise click.UsageError("give one of --at TIME or --run RUN_ID, and -o FILE (or --verify FILE)")
    settings = load_settings()
    layout = storage_layout(settings)
    with index_sessions(settings)() as session:
        try:
            at = run_moment(session, run_id) if run_id else _moment(at_text)
        except SnapshotError as exc:
            raise click.ClickException(str(exc)) from None
        entries = list(versions_at(session, at, groups))
    with click.progressbar(length=len(entries), label="exporting", file=click.get_text_stream("stderr")) as bar:
        manifest = write_snapshot(entries, output, layout.open, at=at, run_id=run_id or "",
                                  progress=lambda _entry: bar.update(1))
    click.echo(f"{output}: {len(manifest['devices'])} device(s) as at {at.isoformat()}")
    for item in manifest["unreadable"]:
        click.echo(f"{item['device']} v{item['version']}: not exported, no copy could be read: {item['error']}",
                   err=True)
    if manifest["unreadable"]:
        raise SystemExit(1)
