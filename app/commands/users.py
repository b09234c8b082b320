"""`apprentice users add|list|key`: accounts and API keys."""

from __future__ import annotations

import argparse
import getpass

from app.services import open_database
from app.settings import Settings
from storage import users
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
    actions.add_parser("list", help="list users", parents=[common]).set_defaults(handler=list_command)
    key = actions.add_parser("key", help="create an API key for a user; prints it as the last line", parents=[common])
    key.add_argument("name")
    key.set_defaults(handler=key_command)


def add_command(args: argparse.Namespace, settings: Settings) -> int:
    db = open_database(settings)
    password = args.password
    if args.password_file:
        password = _read_secret(args.password_file)
    if password is None:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise ApprenticeError("the two passwords differ")
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


def list_command(args: argparse.Namespace, settings: Settings) -> int:
    for user in users.list_users(open_database(settings)):
        print(f"{user.name}\t{user.role}\t{user.created:%Y-%m-%d %H:%M}")
    return 0


def key_command(args: argparse.Namespace, settings: Settings) -> int:
    key = users.create_api_key(open_database(settings), name=args.name)
    print(f"API key for {args.name} (shown once; send it as 'Authorization: Bearer <key>'):")
    print(key)
    return 0
