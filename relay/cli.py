"""``backchannel relay …``: the operator's commands, contributed to the
``backchannel`` command through the ``backchannel.commands`` entry point.

Every failure raises a :class:`keys.errors.BackchannelError`, which the
``backchannel`` command prints as one line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from keys.card import Card, load_card
from keys.clock import SYSTEM_CLOCK, Clock, FixedClock
from keys.encoding import format_time, parse_time
from keys.errors import DecodeError
from keys.keystore import check_owner
from keys.passphrase import get_passphrase, new_passphrase, weakness

from . import logs
from .config import RelayConfig, load_config
from .errors import BadRequest, ConfigError
from .node import (
    NodeDir,
    change_passphrase,
    create_node,
    discard_node,
    kdf_params,
    read_card,
    unlock,
)

if TYPE_CHECKING:
    from .services.membership import Membership
    from .services.peering import Peering, Pinned
    from .storage.database import Database
    from .storage.federation import PeerQueue, PeerRow

# The storage and service modules (SQLAlchemy, Alembic: about 0.7 s) are imported by the
# commands that use them: `backchannel` loads this module for every delegation command.

T = TypeVar("T")
_DURATION = re.compile(r"(\d{1,4})([mhd])", re.ASCII)  # not "٣d"
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}

# argparse gives the sub-parsers action no public name.
SubParsers = argparse._SubParsersAction


def register(sub: SubParsers[argparse.ArgumentParser]) -> None:
    relay = sub.add_parser("relay", help="run and administer a relay node",
                           description="Run and administer a Backchannel relay node.")
    cmds = relay.add_subparsers(dest="relay_command", metavar="COMMAND")
    cmds.required = True

    def command(name: str, help_text: str, func: Callable[[argparse.Namespace], int]
                ) -> argparse.ArgumentParser:
        parser = cmds.add_parser(name, help=help_text, description=help_text)
        parser.add_argument("--dir", required=True, type=Path, help="the node directory")
        parser.set_defaults(func=func)
        return parser

    p = command("init", "create a node: its key, card, relay.toml and database", cmd_init)
    p.add_argument("--name", required=True, help="the node's public name (on its card)")
    p.add_argument("--url", required=True, help="the public URL clients use, https://…")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 8470)")
    p.add_argument("--database", help="postgresql+asyncpg://… (default: SQLite in --dir)")
    _passphrase_arg(p)
    # Fast key derivation for tests only (same as BACKCHANNEL_KDF=floor).
    p.add_argument("--kdf-floor", action="store_true", help=argparse.SUPPRESS)

    p = command("passphrase", "change the passphrase of the node key (same key)",
                cmd_passphrase)
    _passphrase_arg(p)
    p.add_argument("--new-passphrase-file", type=Path, metavar="FILE",
                   help="read the new passphrase from this file (else "
                        "BACKCHANNEL_NEW_PASSPHRASE, else a prompt, asked twice)")

    p = command("card", "print (or write) the node's identity card", cmd_card)
    p.add_argument("--out", type=Path, help="write the card to this file")
    p.add_argument("--armor", action="store_true", help="ASCII-armored instead of JSON")

    p = command("invite", "issue a single-use invitation (printed on the last line)",
                cmd_invite)
    p.add_argument("--name", required=True, help="a label for the invited member "
                   "(shown to operators only)")
    p.add_argument("--role", choices=("delegation", "intermediary"), default="delegation")
    p.add_argument("--expires", default="7d",
                   help="lifetime (30m, 12h, 7d) or a time 2026-12-01T09:00:00Z (default 7d)")
    p.add_argument("--database", help="override the configured database URL")

    p = command("members", "list members and pending invitations", cmd_members)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--database", help="override the configured database URL")

    p = command("revoke", "revoke a member (or a pending invitation) by id", cmd_revoke)
    p.add_argument("id", help="member id or invitation id")
    p.add_argument("--database", help="override the configured database URL")

    peers = cmds.add_parser("peers", help="pin, list and remove peer nodes (federation)",
                            description="Peer nodes are the only nodes this node accepts "
                                        "envelopes and statements from, and forwards to.")
    psub = peers.add_subparsers(dest="peers_command", metavar="COMMAND")
    psub.required = True
    p = psub.add_parser("add", help="pin a peer node by its card",
                        description="Pin a peer node by the card its operator exported with "
                                    "`backchannel relay card`. Compare the fingerprint "
                                    "printed with the one the peer's operator reads to you.")
    p.add_argument("--dir", required=True, type=Path, help="the node directory")
    p.add_argument("card", metavar="CARD_FILE", type=Path, help="the peer's node card")
    p.add_argument("--database", help="override the configured database URL")
    p.set_defaults(func=cmd_peers_add)
    p = psub.add_parser("list", help="list pinned peers")
    p.add_argument("--dir", required=True, type=Path, help="the node directory")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--database", help="override the configured database URL")
    p.set_defaults(func=cmd_peers_list)
    p = psub.add_parser("remove", help="unpin a peer (its pushes are refused from now on)")
    p.add_argument("--dir", required=True, type=Path, help="the node directory")
    p.add_argument("id", metavar="ID", help="the peer's node id")
    p.add_argument("--database", help="override the configured database URL")
    p.set_defaults(func=cmd_peers_remove)

    p = command("serve", "run the node until interrupted", cmd_serve)
    p.add_argument("--host", help="address to listen on (overrides relay.toml)")
    p.add_argument("--port", type=int, help="port to listen on (0: any free port)")
    p.add_argument("--database", help="postgresql+asyncpg://… (overrides relay.toml)")
    _passphrase_arg(p)


def _passphrase_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--passphrase-file", type=Path,
                        help="read the node keystore's passphrase from this file "
                             "(else BACKCHANNEL_PASSPHRASE, else a prompt)")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _config(args: argparse.Namespace, **flags: Any) -> RelayConfig:
    return load_config(args.dir, overrides=flags)


def database_url(config: RelayConfig, node_dir: Path) -> str:
    from .storage.database import sqlite_url

    return config.database or sqlite_url(node_dir)


async def _with_db(url: str, work: Callable[[Database], Awaitable[T]]) -> T:
    from .storage.database import Database

    db = Database.open(url)
    try:
        await db.migrate()
        return await work(db)
    finally:
        await db.dispose()


def _membership(db: Database, card: Card, url: str, *, clock: Clock = SYSTEM_CLOCK
                ) -> Membership:
    from .services.membership import Membership

    return Membership(db, card, url, clock=clock)


def _direct_port(url: str) -> int | None:
    """The port of a plain-HTTP IPv4 loopback URL with an explicit one
    (``http://127.0.0.1:8471``): nothing but the node itself can answer there, so it
    listens on it. Any other URL may sit behind a proxy (https: a local TLS proxy owns
    that port) and says nothing about the listening port."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None  # the configuration check reports the URL itself
    if (parts.scheme != "http" or not port
            or parts.hostname not in ("127.0.0.1", "localhost")):
        return None
    return port


def cmd_init(args: argparse.Namespace) -> int:
    node_dir = NodeDir(args.dir)
    config = load_config(None, defaults={"port": _direct_port(args.url)},
                         overrides={"name": args.name, "url": args.url, "host": args.host,
                                    "port": args.port, "database": args.database})
    if not config.name.strip():
        raise ConfigError("--name must not be empty")
    from .storage.database import SQLITE_FILE, parse_url, sqlite_file, sqlite_files

    url = database_url(config, args.dir)
    # A URL that cannot be read is refused before anything is asked or written.
    parse_url(url)
    sqlite_file(url)
    passphrase = get_passphrase(args.passphrase_file, confirm=True,
                                prompt="New passphrase for the node key: ")
    _warn_if_weak(passphrase)
    db_file = args.dir / SQLITE_FILE
    existed = {path for path in sqlite_files(db_file) if path.exists()}
    identity = create_node(node_dir, config, passphrase, params=kdf_params(args.kdf_floor))

    async def prepare(db: Database) -> None:
        return None

    try:
        _run(_with_db(url, prepare))
    except BaseException:
        # Half a node (a key without its database) would make the next `relay init`
        # refuse the directory: take back what this one wrote.
        discard_node(node_dir)
        for path in sqlite_files(db_file):
            if path not in existed:
                path.unlink(missing_ok=True)
        raise
    if not config.database and db_file.exists():
        # SQLite creates its -wal and -shm files with the database's mode.
        db_file.chmod(0o600)
    print(f"node id:     {identity.id}")
    print(f"fingerprint: {identity.card.fingerprint}")
    print(f"directory:   {args.dir}")
    print(f"listens on:  {config.host}:{config.port} (relay.toml [server])")
    print("next: `backchannel relay invite --dir DIR --name LABEL`, then "
          "`backchannel relay serve --dir DIR`")
    return 0


def cmd_passphrase(args: argparse.Namespace) -> int:
    node_dir = NodeDir(args.dir).require()
    check_owner(node_dir.keystore)  # before any prompt
    current = get_passphrase(args.passphrase_file)
    unlock(node_dir, current)  # the current passphrase is checked before a new one is asked
    new = new_passphrase(args.new_passphrase_file, current=current,
                         prompt="New passphrase for the node key: ")
    _warn_if_weak(new)
    change_passphrase(node_dir, current, new)
    print(f"Passphrase of the node key in {args.dir} changed. A node already running keeps "
          "serving; it needs the new one at its next start. Backup copies of node.keystore "
          "made before still open with the old one.")
    return 0


def _warn_if_weak(passphrase: str) -> None:
    warning = weakness(passphrase)
    if warning:
        print(f"backchannel: warning: {warning}", file=sys.stderr)


def cmd_card(args: argparse.Namespace) -> int:
    card = read_card(NodeDir(args.dir).require())
    text = card.armored() if args.armor else card.to_json().decode("utf-8") + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
        print(f"card written to {args.out} (fingerprint {card.fingerprint})")
    return 0


def parse_expiry(value: str, now: datetime) -> timedelta:
    """``30m``, ``12h``, ``7d`` or an RFC 3339 UTC time. Raises :class:`BadRequest`."""
    match = _DURATION.fullmatch(value.strip())
    if match:
        return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        return parse_time(value.strip(), field="--expires") - now
    except DecodeError:
        raise BadRequest("--expires must be like 30m, 12h, 7d or 2026-12-01T09:00:00Z") from None


def cmd_invite(args: argparse.Namespace) -> int:
    node_dir = NodeDir(args.dir).require()
    config = _config(args, database=args.database)
    card = read_card(node_dir)
    # One instant for the whole command: an absolute --expires comes out exactly as
    # given, not a second later (the lifetime is measured from this instant).
    now = FixedClock(SYSTEM_CLOCK.now())
    lifetime = parse_expiry(args.expires, now.now())

    async def work(db: Database) -> Any:
        return await _membership(db, card, config.url, clock=now).invite(
            args.name, args.role, lifetime)

    issued = _run(_with_db(database_url(config, args.dir), work))
    article = "an" if issued.role[:1] in "aeiou" else "a"
    print(f"invitation {issued.id} for {article} {issued.role}, valid until "
          f"{format_time(issued.expires)}, single use.")
    print("Give the whole line below to the invited party over a trusted channel:")
    print(issued.text)
    return 0


def _time(stamp: int | None) -> str | None:
    return format_time(datetime.fromtimestamp(stamp, UTC)) if stamp is not None else None


def cmd_members(args: argparse.Namespace) -> int:
    NodeDir(args.dir).require()
    config = _config(args, database=args.database)
    card = read_card(NodeDir(args.dir))

    async def work(db: Database) -> Any:
        membership = _membership(db, card, config.url)
        return await membership.members(), await membership.invitations()

    rows, invitations = _run(_with_db(database_url(config, args.dir), work))
    now = int(SYSTEM_CLOCK.now().timestamp())
    pending = [i for i in invitations
               if i.used_at is None and i.revoked_at is None and i.expires_at > now]
    if args.json:
        json.dump({"members": [{"id": r.id, "role": r.role, "label": r.label,
                                "status": r.status, "joined": _time(r.joined_at),
                                "revoked": _time(r.revoked_at)} for r in rows],
                   "invitations": [{"id": i.id, "role": i.role, "label": i.label,
                                    "expires": _time(i.expires_at)} for i in pending]},
                  sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return 0
    if not rows and not pending:
        print("no members and no pending invitations")
    for r in rows:
        print(f"{r.id}  {r.role:<12}  {r.status:<7}  joined {_time(r.joined_at)}  {r.label}")
    for i in pending:
        print(f"{i.id:<32}  {i.role:<12}  invited  expires {_time(i.expires_at)}  {i.label}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    NodeDir(args.dir).require()
    config = _config(args, database=args.database)
    card = read_card(NodeDir(args.dir))

    async def work(db: Database) -> str:
        return await _membership(db, card, config.url).revoke(args.id)

    what = _run(_with_db(database_url(config, args.dir), work))
    print(f"revoked {what} {args.id}")
    return 0


#: A node card is about 2.5 KB (4 KB armored).
MAX_CARD_FILE = 64 * 1024


def _peering(args: argparse.Namespace) -> tuple[RelayConfig, Callable[[Database], Peering]]:
    node_dir = NodeDir(args.dir).require()
    config = _config(args, database=args.database)
    own = read_card(node_dir)
    from .services.peering import Peering

    return config, lambda db: Peering(db, own.id)


def cmd_peers_add(args: argparse.Namespace) -> int:
    config, peering = _peering(args)
    try:
        with args.card.open("rb") as handle:
            data = handle.read(MAX_CARD_FILE + 1)
    except OSError as exc:
        raise BadRequest(f"cannot read {args.card}: {exc.strerror or exc}") from None
    if len(data) > MAX_CARD_FILE:
        raise BadRequest(f"{args.card} is too large to be a card")

    async def work(db: Database) -> Pinned:
        service = peering(db)
        return await service.add(service.load(data))

    pinned = _run(_with_db(database_url(config, args.dir), work))
    card = pinned.card
    verb = {"added": "pinned", "updated": "updated", "unchanged": "already pinned:"}[
        pinned.outcome]
    url = card.home.url if card.home else ""
    print(f"{verb} peer {card.name} ({card.id}) at {url}")
    print(f"fingerprint: {card.fingerprint}")
    print("Compare the fingerprint with the peer's operator before relying on it; the peer "
          "must pin this node's card too (`backchannel relay card`).")
    return 0


def peer_json(row: PeerRow) -> dict[str, Any]:
    card = read_peer_card(row)
    return {"id": row.id, "name": row.name, "url": row.url, "fingerprint": card.fingerprint,
            "added": _time(row.added_at)}


def queue_json(queue: PeerQueue | None) -> dict[str, Any]:
    if queue is None:
        return {"envelopes": 0, "receipts": 0}
    return {"envelopes": queue.envelopes, "receipts": queue.receipts,
            "oldest": _time(queue.oldest), "next_attempt": _time(queue.next_attempt),
            "attempts": queue.attempts, "last_error": queue.last_error}


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")


def queue_text(queue: PeerQueue) -> str:
    """One line: what waits for a peer, since when, and why."""
    parts = [_plural(n, w) for n, w in ((queue.envelopes, "envelope"),
                                        (queue.receipts, "receipt")) if n]
    text = f"queued: {' and '.join(parts)} since {_time(queue.oldest)}"
    if queue.attempts:
        text += (f"; {_plural(queue.attempts, 'attempt')} so far, last error "
                 f"{queue.last_error or 'unknown'}; next attempt {_time(queue.next_attempt)}")
    return text


def read_peer_card(row: PeerRow) -> Card:
    return load_card(row.card, now=SYSTEM_CLOCK.now(), allow_expired=True, check_created=False)


def cmd_peers_list(args: argparse.Namespace) -> int:
    config, peering = _peering(args)

    async def work(db: Database) -> tuple[list[PeerRow], dict[str, PeerQueue]]:
        service = peering(db)
        return await service.list(), await service.queues()

    rows, queues = _run(_with_db(database_url(config, args.dir), work))
    if args.json:
        json.dump(peers_json(rows, queues), sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        print("\n".join(peers_text(rows, queues)))
    return 0


def _unpinned(rows: list[PeerRow], queues: dict[str, PeerQueue]) -> list[PeerQueue]:
    # Receipts queued for a peer unpinned since wait until it is pinned again or
    # retention purges them: the operator should see them.
    pinned = {r.id for r in rows}
    return [q for peer, q in sorted(queues.items()) if peer not in pinned]


def peers_json(rows: list[PeerRow], queues: dict[str, PeerQueue]) -> dict[str, Any]:
    return {"peers": [{**peer_json(r), "queued": queue_json(queues.get(r.id))} for r in rows],
            "unpinned_with_queued": [{"id": q.peer, "queued": queue_json(q)}
                                     for q in _unpinned(rows, queues)]}


def peers_text(rows: list[PeerRow], queues: dict[str, PeerQueue]) -> list[str]:
    lines = [] if rows else [
        "no peers: pin one with `backchannel relay peers add --dir DIR CARD_FILE`"]
    for row in rows:
        item = peer_json(row)
        lines.append(f"{row.id}  {row.url}  {item['fingerprint']}  added {item['added']}  "
                     f"{row.name}")
        if row.id in queues:
            lines.append(f"    {queue_text(queues[row.id])}")
    for queue in _unpinned(rows, queues):
        lines.append(f"{queue.peer}  (not pinned)")
        lines.append(f"    {queue_text(queue)}; pin it again to deliver them")
    return lines


def removal_text(peer_id: str, queue: PeerQueue | None) -> list[str]:
    lines = [f"removed peer {peer_id}"]
    if queue is not None and queue.envelopes:
        one = queue.envelopes == 1
        lines.append(f"{_plural(queue.envelopes, 'envelope')} queued for it "
                     f"{'is' if one else 'are'} retried until "
                     f"{'it expires' if one else 'they expire'}, then reported to the "
                     "sender as failed")
    if queue is not None and queue.receipts:
        one = queue.receipts == 1
        lines.append(f"{_plural(queue.receipts, 'receipt')} queued for it "
                     f"{'waits' if one else 'wait'} until it is pinned again "
                     "(`backchannel relay peers list` shows them) or retention purges "
                     f"{'its envelope' if one else 'their envelopes'}")
    return lines


def cmd_peers_remove(args: argparse.Namespace) -> int:
    config, peering = _peering(args)

    async def work(db: Database) -> PeerQueue | None:
        return await peering(db).remove(args.id)

    queue = _run(_with_db(database_url(config, args.dir), work))
    print("\n".join(removal_text(args.id, queue)))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve
    from .storage.serve_lock import serving

    node_dir = NodeDir(args.dir).require()
    config = _config(args, host=args.host, port=args.port, database=args.database)
    logs.configure(config.log_level, config.log_format)
    url = database_url(config, args.dir)
    # Before the passphrase is asked for, and before anything is bound or migrated: a
    # second process on one SQLite file would acknowledge deliveries its neighbour's
    # WebSocket sessions never hear of (ADR 0015).
    with serving(url):
        passphrase = get_passphrase(args.passphrase_file, prompt="Node passphrase: ")
        identity = unlock(node_dir, passphrase)
        _run(serve(config, identity, url))
    return 0
