"""Command line: `python -m shared.cli apikey create|list|revoke`, `event publish`, `purge`,
`poison replay`, `portal link`, `log reindex`, `health migrate`, `backup export|restore`.

Reads the same settings as the app: the environment, else local.settings.json, else the
sample's local defaults; when the environment names the app's storage (an operator's shell
pointed at Azure), the environment only. The result a script wants is printed alone on the
last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from shared.catalog import known_key
from shared.eventqueues import queue_of
from shared.models.access import EVERY_SCOPE, Scope
from shared.service.audit import CLI_KEY_ID, audited
from shared.service.poison import Replayed, is_replayable, replay, replayable_queues
from shared.service.reindex import reindex
from shared.service.retention import purge
from shared.services import Services
from shared.settings import Settings, SettingsError, load_command_line_settings
from shared.storage import clients
from shared.storage.clients import POISON_SUFFIX

Command = Callable[[Services, argparse.Namespace], Awaitable[int]]


async def apikey_create(services: Services, args: argparse.Namespace) -> int:
    scopes = frozenset(Scope(s) for s in args.scope) if args.scope else EVERY_SCOPE
    async with audited(services, args.account, CLI_KEY_ID, "apikey.create") as change:
        key, info = await services.api_keys.create(args.account, services.clock(), scopes)
        change.target = info.key_id
    print(f"API key {info.key_id} for account {info.account} (shown once; store it safely):")
    print(f"scopes: {', '.join(sorted(info.scopes))}")
    print(key)
    return 0


async def apikey_list(services: Services, args: argparse.Namespace) -> int:
    keys = await services.api_keys.for_account(args.account)
    print(f"{'KEY ID':10} {'ACCOUNT':24} {'CREATED':25} SCOPES")
    for k in keys:
        scopes = "all" if k.scopes == EVERY_SCOPE else ",".join(sorted(k.scopes))
        created = k.created_at.isoformat(timespec="seconds")
        print(f"{k.key_id:10} {k.account:24} {created:25} {scopes}")
    return 0


async def apikey_revoke(services: Services, args: argparse.Namespace) -> int:
    from shared.errors import NotFound

    try:
        account = await services.api_keys.owner_of(args.key_id)
        async with audited(services, account, CLI_KEY_ID, "apikey.delete", args.key_id):
            info = await services.api_keys.revoke(args.key_id, account)
    except NotFound:
        print(f"no API key with id {args.key_id}", file=sys.stderr)
        return 1
    print(f"revoked API key {info.key_id} of account {info.account}")
    return 0


async def portal_link(services: Services, args: argparse.Namespace) -> int:
    from shared.portal import sign_in_link

    async with audited(services, args.account, CLI_KEY_ID, "portal.link"):
        link = await sign_in_link(services, args.account, args.minutes, args.base_url)
    print(f"one-time portal sign-in link for account {args.account}, valid {args.minutes} min:")
    print(link)
    return 0


def account_id(value: str) -> str:
    """An account id, checked before anything is written (the audit log's rows name it)."""
    from shared.storage.apikeys import ACCOUNT_ID

    if not ACCOUNT_ID.match(value):
        raise argparse.ArgumentTypeError("1-64 letters, digits, '.', '_' or '-'")
    return value


def event_data(value: str) -> Any:
    """`--data` as curl reads it: inline JSON, `@file.json`, or `-` (also `@-`) for stdin.

    A command-line argument holds at most 128 KB on Linux, so large events come by file.
    Read while the arguments are parsed, so a missing file is reported before any storage
    is touched.
    """
    source, text = "the value", value
    try:
        if value in ("-", "@-"):
            source, text = "stdin", sys.stdin.read()
        elif value.startswith("@"):
            source = f"file {value[1:]}"
            text = Path(value[1:]).read_text(encoding="utf-8")
        return json.loads(text)
    except OSError as e:
        raise argparse.ArgumentTypeError(f"cannot read {source}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise argparse.ArgumentTypeError(f"{source} is not UTF-8 text: {e.reason}") from None
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"{source} is not JSON: {e}") from None


def event_key(value: str) -> str:
    """`--key` as the API checks event keys: the catalog's, in its spelling (before any storage
    is touched)."""
    try:
        return known_key(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def replayable_queue(name: str) -> str:
    if not is_replayable(name):
        raise argparse.ArgumentTypeError(f"not a queue with a poison queue to replay: {name!r}")
    return name


async def event_publish(services: Services, args: argparse.Namespace) -> int:
    from shared.events import new_event

    event = new_event(args.account, args.key, services.clock(), args.subject, args.data)
    await services.publish(event)
    queue = queue_of(event.account_id, services.settings.system_event_queue_count)
    print(f"published {event.event_key} for account {event.account_id} to {queue}:")
    print(event.event_id)
    return 0


def parse_instant(text: str) -> datetime:
    """An ISO 8601 date-time for `purge --now`; UTC when it has no offset."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date-time: {text!r}") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


async def purge_command(services: Services, args: argparse.Namespace) -> int:
    """`purge [--now ISO8601]`: the counts of records and bodies removed alone on the last line."""
    now = args.now or services.clock()
    result = await purge(services, now)
    print(f"purge as of {now.isoformat()}: {result.describe()}")
    print(f"{result.records_removed} {result.bodies_removed}")
    return 0


async def poison_replay_command(services: Services, args: argparse.Namespace) -> int:
    """`poison replay [--queue Q]`: how many went back alone on the last line."""
    total = Replayed()
    every = replayable_queues(services.settings.system_event_queue_count)
    for queue in [args.queue] if args.queue else every:
        done = await replay(services, queue)
        print(f"{queue}{POISON_SUFFIX}: {done.replayed} sent back to {queue}, {done.kept} kept")
        total.replayed += done.replayed
        total.kept += done.kept
    print(total.replayed)
    return 0


async def reindex_command(services: Services, args: argparse.Namespace) -> int:
    """`log reindex [--connection UID]`: the records counted alone on the last line."""
    partitions, counted, indexed = await reindex(services, args.connection)
    print(
        f"log reindex: {partitions} partitions, {counted} records without counters counted, "
        f"{indexed} without search index rows indexed"
    )
    print(counted)
    return 0


async def health_migrate_command(services: Services, args: argparse.Namespace) -> int:
    """`health migrate`: the rows moved alone on the last line."""
    from shared.service.healthmove import OLD_TABLE, migrate_health

    done = await migrate_health(services)
    print(
        f"health migrate: {done.moved} rows of {OLD_TABLE} moved beside their connection, "
        f"{done.kept} already there (newer), {done.orphans} of deleted connections dropped"
    )
    print(done.moved)
    return 0


async def backup_command(services: Services, args: argparse.Namespace) -> int:
    """`backup export|restore DIR [--table T ...]`: the entities written or read, last."""
    from shared.service import backup

    tables = tuple(args.table or backup.DEFAULT_TABLES)
    run = backup.export if args.action == "export" else backup.restore
    counts = await run(services.storage, Path(args.folder), tables)
    for table, count in counts.items():
        print(f"{args.action} {table}: {count} entities ({args.folder}/{table}.jsonl)")
    print(sum(counts.values()))
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m shared.cli", description=__doc__)
    groups = root.add_subparsers(dest="group", required=True)
    _add_tenant_commands(groups)
    _add_portal_commands(groups)
    _add_operator_commands(groups)
    return root


Groups = argparse._SubParsersAction  # what add_subparsers returns


def _add_tenant_commands(groups: Groups) -> None:
    """What the platform runs for its accounts: API keys and events."""
    apikey = groups.add_parser("apikey", help="API keys of accounts").add_subparsers(
        dest="action", required=True
    )
    create = apikey.add_parser("create", help="make a key; prints it alone on the last line")
    create.add_argument("--account", required=True, type=account_id)
    create.add_argument(
        "--scope",
        action="append",
        choices=[s.value for s in Scope],
        help="a right the key holds (repeat for more); every one when none is named",
    )
    create.set_defaults(run=apikey_create)
    listing = apikey.add_parser("list", help="list keys (ids, never the keys)")
    listing.add_argument("--account")
    listing.set_defaults(run=apikey_list)
    revoke = apikey.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    revoke.set_defaults(run=apikey_revoke)

    event = groups.add_parser("event", help="system events").add_subparsers(
        dest="action", required=True
    )
    publish = event.add_parser("publish", help="raise an event; prints its EventId last")
    publish.add_argument("--account", required=True, type=account_id)
    publish.add_argument(
        "--key", required=True, type=event_key, help="EventKey, e.g. Employee.Created"
    )
    publish.add_argument("--subject")
    publish.add_argument(
        "--data",
        type=event_data,
        help="the event's Data: JSON, or @file.json, or - to read it from stdin (as curl does)",
    )
    publish.set_defaults(run=event_publish)


def _add_portal_commands(groups: Groups) -> None:
    """What the platform runs to let a tenant's people into the portal."""
    portal = groups.add_parser("portal", help="the tenant portal").add_subparsers(
        dest="action", required=True
    )
    link = portal.add_parser("link", help="a one-time sign-in link; printed alone last")
    link.add_argument("--account", required=True, type=account_id)
    link.add_argument("--minutes", type=int, default=60, help="how long the link works (1-1440)")
    link.add_argument(
        "--base-url", help="where the app is reached (default: PORTAL_BASE_URL, else local)"
    )
    link.set_defaults(run=portal_link)


def _add_operator_commands(groups: Groups) -> None:
    """What an operator runs on the app's own storage: purge, poison queues, the log."""
    purging = groups.add_parser(
        "purge",
        help="delete log records older than the retention; prints the records and "
        "bodies removed alone on the last line",
    )
    purging.add_argument(
        "--now",
        type=parse_instant,
        help="ISO 8601 date-time to purge as of (default: now; no offset = UTC)",
    )
    purging.set_defaults(run=purge_command)

    poison = groups.add_parser("poison", help="messages the host gave up on").add_subparsers(
        dest="action", required=True
    )
    replaying = poison.add_parser(
        "replay",
        help="send well-formed poison messages back to their queue (malformed ones stay); "
        "prints how many were sent back alone on the last line",
    )
    one = "one queue: system-events[-k], delivery-retries, replays (default: all)"
    replaying.add_argument("--queue", type=replayable_queue, help=one)
    replaying.set_defaults(run=poison_replay_command)

    log = groups.add_parser("log", help="the message log").add_subparsers(
        dest="action", required=True
    )
    reindex = log.add_parser(
        "reindex",
        help="build counters and the failure index for records written before they existed "
        "(once, after upgrading; idempotent, resumable); prints the records counted last",
    )
    reindex.add_argument("--connection", type=UUID, help="one connection's Uid (default: all)")
    reindex.set_defaults(run=reindex_command)

    health = groups.add_parser("health", help="connections' health rows").add_subparsers(
        dest="action", required=True
    )
    health.add_parser(
        "migrate",
        help="move health rows of an older version beside their connection (once, after "
        "upgrading; idempotent); prints the rows moved alone on the last line",
    ).set_defaults(run=health_migrate_command)
    _add_backup_commands(groups)


def _add_backup_commands(groups: Groups) -> None:
    backing_up = groups.add_parser("backup", help="connections and API keys, to files and back")
    actions = backing_up.add_subparsers(dest="action", required=True)
    for action, text in (
        ("export", "write each table to FOLDER/<table>.jsonl"),
        ("restore", "upsert the entities of FOLDER/<table>.jsonl (idempotent)"),
    ):
        command = actions.add_parser(action, help=text + "; prints the entities last")
        command.add_argument("folder", metavar="FOLDER")
        command.add_argument(
            "--table",
            action="append",
            choices=(clients.CONNECTIONS_TABLE, clients.API_KEYS_TABLE),
            help="a table (repeatable; default: connections, apikeys and ownership)",
        )
        command.set_defaults(run=backup_command)


async def _run(command: Command, args: argparse.Namespace) -> int:
    # Ctrl-C cancels this task: the finally closes the clients (no "Unclosed client session")
    services = await Services.open(Settings.from_environment())
    try:
        return await command(services, args)
    finally:
        await services.close()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    load_command_line_settings()
    try:
        return asyncio.run(_run(args.run, args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, SettingsError) as e:  # bad input (pydantic's ValidationError too)
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
