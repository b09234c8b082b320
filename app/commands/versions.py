"""`apprentice versions [--json]`, `versions add NAME --adapter DIR`, `versions prune [--keep N]`, `activate NAME`.

`versions add` records the checksum of the adapter's files; `activate` refuses a version whose adapter is missing or
no longer matches it (app/services/versions.py: the same rule as the admin tabs and API), then marks it active; a
running server follows within its `version_poll_seconds` (hot swap: replies already streaming finish on their
version). Rollback is `activate` of an earlier version.
"""

from __future__ import annotations

import argparse
import json

from app.services import open_database
from app.services import versions as live
from app.services.prune import prune_versions
from app.settings import Settings
from storage import versions
from storage.errors import ApprenticeError
from storage.models import ModelVersion


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("versions", help="list model versions, oldest first", parents=[common])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=list_command)
    actions = parser.add_subparsers(dest="versions_command", metavar="ACTION")
    add = actions.add_parser("add", help="register a LoRA adapter folder as a candidate version", parents=[common])
    add.add_argument("name")
    add.add_argument("--adapter", required=True, help="folder written by peft's save_pretrained")
    add.add_argument("--parent", help="the version it was trained from (default: the active one)")
    add.add_argument("--reason", default="", help="a note shown in the list")
    add.set_defaults(handler=add_command)
    prune = actions.add_parser(
        "prune",
        help="delete the adapter folders of rejected and superseded candidates (never the live version, its "
        "ancestors, a version that was ever live, or one made within --min-age-hours)",
        parents=[common],
    )
    prune.add_argument("--keep", type=int, default=0, help="keep the N newest of those folders (default 0)")
    prune.add_argument("--min-age-hours", type=float, default=1.0, help="spare versions younger than this (1)")
    prune.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    prune.set_defaults(handler=prune_command)
    activate = sub.add_parser("activate", help="make a version live (also rollback)", parents=[common])
    activate.add_argument("name")
    activate.set_defaults(handler=activate_command)


def as_dict(v: ModelVersion) -> dict[str, object]:
    return {
        "name": v.name,
        "status": v.status,
        "parent": v.parent,
        "created": v.created.isoformat(timespec="seconds"),
        "activated": v.activated.isoformat(timespec="seconds") if v.activated else None,
        "adapter_path": v.adapter_path,
        "round_id": v.round_id,
        "reason": v.reason,
    }


def list_command(args: argparse.Namespace, settings: Settings) -> int:
    rows = versions.list_versions(open_database(settings))
    if args.json:
        print(json.dumps([as_dict(v) for v in rows], indent=2))
        return 0
    print(f"{'name':<16} {'status':<10} {'parent':<16} {'created':<17} adapter")
    for v in rows:
        marker = "*" if v.status == "active" else " "
        print(
            f"{v.name:<15}{marker} {v.status:<10} {v.parent or '-':<16} {v.created:%Y-%m-%d %H:%M} "
            f"{v.adapter_path or '(base model)'}"
        )
    return 0


def add_command(args: argparse.Namespace, settings: Settings) -> int:
    v = live.register(open_database(settings), args.name, args.adapter, parent=args.parent, reason=args.reason)
    print(f"added candidate version {v.name} (parent {v.parent}); make it live with: apprentice activate {v.name}")
    return 0


def activate_command(args: argparse.Namespace, settings: Settings) -> int:
    new, previous = live.activate(open_database(settings), args.name)
    if new.name == previous.name:
        print(f"{new.name} was already active")
    else:
        print(f"activated {new.name} (was {previous.name}); a running server switches to it within a few seconds")
    return 0


def prune_command(args: argparse.Namespace, settings: Settings) -> int:

    if args.keep < 0 or args.min_age_hours < 0:
        raise ApprenticeError("--keep and --min-age-hours cannot be negative")
    report = prune_versions(
        open_database(settings), settings.data_dir / "versions", keep=args.keep, min_age_hours=args.min_age_hours,
        dry_run=args.dry_run,
    )  # fmt: skip
    for line in report:
        print(line)
    return 0
