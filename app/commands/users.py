"""`apprentice users add|list|role|password|disable|enable|remove|key|keys|revoke-key`: accounts and API keys."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json

from app.services import open_database
from app.settings import Settings
from storage import people, users
from storage.errors import ApprenticeError, Conflict
from storage.models import ROLES


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("users", help="manage users and API keys", parents=[common])
    actions = parser.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="create a user (prompts for the password unless --password)", parents=[common])
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default="user")
    secret = add.add_mutually_exclusive_group()
    secret.add_argument("--password", help="at least 8 characters; prompted for when left out")
    secret.add_argument("--password-file", help="read the password from this file (a container secret)")
    add.add_argument("--exist-ok", action="store_true", help="a user of this name already there is no error (kept)")
    add.set_defaults(handler=add_command)
    listing = actions.add_parser(
        "list", help="list users: role, created, last sign-in, live API keys, disabled", parents=[common]
    )
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(handler=list_command)
    role = actions.add_parser("role", help="change a user's role", parents=[common])
    role.add_argument("name")
    role.add_argument("role", choices=ROLES)
    role.set_defaults(handler=role_command)
    password = actions.add_parser(
        "password", help="set a new password (prompts for it unless --password or --password-file)", parents=[common]
    )
    password.add_argument("name")
    given = password.add_mutually_exclusive_group()
    given.add_argument("--password", help="at least 8 characters; prompted for when left out")
    given.add_argument("--password-file", help="read the password from this file (a container secret)")
    password.set_defaults(handler=password_command)
    for action, disabled, what in (
        ("disable", True, "no sign-in, API keys refused, open sessions refused at their next action (reversible)"),
        ("enable", False, "undo disable"),
    ):
        toggle = actions.add_parser(action, help=what, parents=[common])
        toggle.add_argument("name")
        toggle.set_defaults(handler=disable_command, disabled=disabled)
    remove = actions.add_parser(
        "remove", help="delete a user with their keys, conversations and ratings (needs --yes)", parents=[common]
    )
    remove.add_argument("name")
    remove.add_argument("--yes", action="store_true", help="confirm the deletion")
    remove.set_defaults(handler=remove_command)
    key = actions.add_parser("key", help="create an API key for a user; prints it as the last line", parents=[common])
    key.add_argument("name")
    key.set_defaults(handler=key_command)
    keys = actions.add_parser(
        "keys", help="list a user's API keys by id: prefix, created, last used, revoked", parents=[common]
    )
    keys.add_argument("name")
    keys.add_argument("--json", action="store_true", help="print JSON instead of a table")
    keys.set_defaults(handler=keys_command)
    revoke = actions.add_parser("revoke-key", help="revoke one API key by its id (see `users keys`)", parents=[common])
    revoke.add_argument("id", type=int)
    revoke.set_defaults(handler=revoke_command)


def _password(args: argparse.Namespace) -> str:
    """--password, else --password-file, else asked for twice."""
    if args.password_file:
        return _read_secret(args.password_file)
    if args.password is not None:
        return args.password
    password = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != password:
        raise ApprenticeError("the two passwords differ")
    return password


def add_command(args: argparse.Namespace, settings: Settings) -> int:
    db = open_database(settings)
    password = _password(args)
    try:
        user = users.create_user(db, name=args.name, role=args.role, password=password)
    except Conflict:
        if not args.exist_ok:
            raise
        print(f"user {args.name} exists; left as it is")
        return 0
    print(f"created {user.role} {user.name}")
    return 0


def _read_secret(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().removesuffix("\n")  # the newline `echo` or an editor leaves is not part of it
    except OSError as e:
        raise ApprenticeError(f"cannot read the password file {path} ({e.strerror})") from e


def _when(moment: dt.datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment else "never"


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def list_command(args: argparse.Namespace, settings: Settings) -> int:
    rows = people.list_people(open_database(settings))
    if args.json:
        print(json.dumps([{"name": p.name, "role": p.role, "created": _iso(p.created),
                           "last_sign_in": _iso(p.last_sign_in), "keys": p.keys, "disabled": p.disabled}
                          for p in rows], indent=2))  # fmt: skip
        return 0
    print("name\trole\tcreated\tlast sign-in\tkeys\tstate")
    for p in rows:
        state = "disabled" if p.disabled else "enabled"
        print(f"{p.name}\t{p.role}\t{_when(p.created)}\t{_when(p.last_sign_in)}\t{p.keys}\t{state}")
    return 0


def role_command(args: argparse.Namespace, settings: Settings) -> int:
    people.set_role(open_database(settings), name=args.name, role=args.role)
    print(f"{args.name} is now a {args.role}")
    return 0


def password_command(args: argparse.Namespace, settings: Settings) -> int:
    db = open_database(settings)
    users.get_user(db, name=args.name)  # an unknown name fails before the prompt
    people.reset_password(db, name=args.name, password=_password(args))
    print(f"new password set for {args.name}")
    return 0


def disable_command(args: argparse.Namespace, settings: Settings) -> int:
    people.set_disabled(open_database(settings), name=args.name, disabled=args.disabled)
    print(f"{args.name} is {'disabled' if args.disabled else 'enabled'}")
    return 0


def remove_command(args: argparse.Namespace, settings: Settings) -> int:
    db = open_database(settings)
    users.get_user(db, name=args.name)
    if not args.yes:
        raise ApprenticeError(
            f"removing {args.name} deletes their API keys, conversations and ratings: add --yes to confirm "
            f"(`apprentice users disable {args.name}` keeps them)"
        )
    people.remove_user(db, name=args.name)
    print(f"removed {args.name}")
    return 0


def keys_command(args: argparse.Namespace, settings: Settings) -> int:
    rows = people.list_keys(open_database(settings), name=args.name)
    if args.json:
        print(json.dumps([{"id": k.id, "user": k.user, "prefix": k.prefix, "created": _iso(k.created),
                           "last_used": _iso(k.last_used), "revoked": _iso(k.revoked)} for k in rows],
                         indent=2))  # fmt: skip
        return 0
    print("id\tprefix\tcreated\tlast used\trevoked")
    for k in rows:
        print(
            f"{k.id}\t{k.prefix}...\t{_when(k.created)}\t{_when(k.last_used)}\t{_when(k.revoked) if k.revoked else '-'}"
        )
    return 0


def revoke_command(args: argparse.Namespace, settings: Settings) -> int:
    key = people.revoke_key(open_database(settings), key_id=args.id)
    print(f"revoked API key {key.id} ({key.prefix}...) of {key.user}")
    return 0


def key_command(args: argparse.Namespace, settings: Settings) -> int:
    key = users.create_api_key(open_database(settings), name=args.name)
    print(f"API key for {args.name} (shown once; send it as 'Authorization: Bearer <key>'):")
    print(key)
    return 0
