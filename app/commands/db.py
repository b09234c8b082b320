"""`apprentice db upgrade`: apply the database migrations."""

from __future__ import annotations

import argparse

from app.services import open_database
from app.settings import Settings
from storage.db import current_revision


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    db = sub.add_parser("db", help="database maintenance", parents=[common])
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = db_sub.add_parser("upgrade", help="apply every migration up to the newest schema", parents=[common])
    up.set_defaults(handler=upgrade_command)


def upgrade_command(args: argparse.Namespace, settings: Settings) -> int:
    db = open_database(settings)
    print(f"database {db.url.render_as_string(hide_password=True)} is at schema {current_revision(db)}")
    return 0
