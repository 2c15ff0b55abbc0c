"""``devicevault dlq``: the dead-letter streams of the result streams (``device:results:dead``,
``storage:results:dead``): results the index consumer could not apply after its allowed deliveries, and
malformed messages. List and show them, replay them once the cause is fixed, or purge them.

"""

from __future__ import annotations

import functools
import json

import click

from jobs.streams.results import DEVICE_RESULTS_STREAM, STORAGE_RESULTS_STREAM

from .common import Fail, emit, load_settings, redis_client

_STREAMS = {"device": DEVICE_RESULTS_STREAM, "storage": STORAGE_RESULTS_STREAM,
            DEVICE_RESULTS_STREAM: DEVICE_RESULTS_STREAM, STORAGE_RESULTS_STREAM: STORAGE_RESULTS_STREAM}
_COLUMNS = ["id", "stream", "source_id", "task_id", "device", "error", "deliveries", "dead_at"]

_stream_option = click.option(
    "--stream", "stream", type=click.Choice(sorted(_STREAMS)),
    help="Only the dead letters of this result stream (default: both).",
)


def _streams(stream: str | None) -> list[str] | None:
    return [_STREAMS[stream]] if stream else None


def _guard(fn):
    """Dead-letter lookups and Redis errors as one clear line."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from redis.exceptions import RedisError

        from jobs.streams.deadletters import DeadLetterError
        from jobs.settings import redact_url

        try:
            return fn(*args, **kwargs)
        except DeadLetterError as exc:
            raise Fail(str(exc)) from exc
        except RedisError as exc:
            raise Fail(f"redis at {redact_url(load_settings().redis_url)}: {exc}") from exc

    return wrapper


def _client():
    return redis_client(load_settings())


def _chosen(redis, ids: tuple[str, ...], all_: bool, stream: str | None, verb: str):
    from jobs.streams.deadletters import find_dead_letter, list_dead_letters

    if all_ and ids:
        raise Fail("give dead-letter ids or --all, not both")
    if not all_ and not ids:
        raise Fail(f"name the dead-letter entries to {verb} (ids from 'devicevault dlq list'), or --all")
    if all_:
        return list_dead_letters(redis, _streams(stream))
    letters, seen = [], set()
    for entry_id in ids:  # every id is looked up before anything is changed
        letter = find_dead_letter(redis, entry_id, _streams(stream))
        if (letter.dead_stream, letter.id) not in seen:
            seen.add((letter.dead_stream, letter.id))
            letters.append(letter)
    return letters


@click.group()
def dlq() -> None:
    """Dead-letter streams: results the consumer could not apply (malformed, or failing on every try)."""


@dlq.command("list")
@_stream_option
@click.option("--json", "as_json", is_flag=True)
@_guard
def dlq_list(stream, as_json) -> None:
    """Every dead-letter entry: id, source stream and id, task, device, last error, deliveries, when."""
    from jobs.streams.deadletters import list_dead_letters

    rows = [letter.summary() for letter in list_dead_letters(_client(), _streams(stream))]
    emit(rows, _COLUMNS, as_json)


@dlq.command("show")
@click.argument("entry_id", metavar="ID")
@_stream_option
@click.option("--json", "as_json", is_flag=True)
@_guard
def dlq_show(entry_id, stream, as_json) -> None:
    """One dead-letter entry in full, with its payload as pretty JSON."""
    from jobs.streams.deadletters import find_dead_letter

    letter = find_dead_letter(_client(), entry_id, _streams(stream))
    full = letter.as_dict()
    if as_json:
        click.echo(json.dumps(full, indent=2, default=str))
        return
    for key in ("id", "dead_letter_stream", "stream", "source_id", "task_id", "device", "deliveries", "dead_at",
                "error"):
        click.echo(f"{key + ':':<19} {full[key]}")
    for key, value in full["fields"].items():
        if key != "data":
            click.echo(f"{'field ' + key + ':':<19} {value}")
    click.echo("payload:")
    payload = full["payload"]
    click.echo(json.dumps(payload, indent=2, default=str) if not isinstance(payload, str) else payload)


@dlq.command("replay")
@click.argument("entry_ids", metavar="ID...", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Replay every dead-letter entry (of --stream, if given).")
@_stream_option
@click.option("--json", "as_json", is_flag=True)
@_guard
def dlq_replay(entry_ids, all_, stream, as_json) -> None:
    """Put dead-lettered messages back on their result stream as new messages and remove them from the
    dead-letter stream. Applying is idempotent on the task id, so a replayed result is applied once."""
    from jobs.streams.deadletters import replay

    redis = _client()
    rows = []
    for letter in _chosen(redis, entry_ids, all_, stream, "replay"):
        new_id = replay(redis, letter)
        rows.append({"id": letter.id, "stream": letter.source_stream, "new_id": new_id, "task_id": letter.task_id,
                     "device": letter.device})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"replayed {r['id']} to {r['stream']} as {r['new_id']} (task {r['task_id'] or '?'}, "
                   f"device {r['device'] or '?'})")
    click.echo(f"{len(rows)} dead letter(s) replayed")


@dlq.command("purge")
@click.argument("entry_ids", metavar="ID...", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Purge every dead-letter entry (of --stream, if given).")
@_stream_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_guard
def dlq_purge(entry_ids, all_, stream, yes) -> None:
    """Delete dead-letter entries for good (asks first unless --yes)."""
    from jobs.streams.deadletters import purge

    redis = _client()
    letters = _chosen(redis, entry_ids, all_, stream, "purge")
    if not letters:
        click.echo("0 dead letter(s) purged")
        return
    if not yes:
        click.confirm(f"delete {len(letters)} dead-letter entry(ies) for good?", abort=True)
    removed = 0
    for letter in letters:
        if purge(redis, letter):
            removed += 1
            click.echo(f"purged {letter.id} of {letter.dead_stream} (task {letter.task_id or '?'})")
    click.echo(f"{removed} dead letter(s) purged")
