"""`apprentice`: the command line. Subcommands live one group per module in app/commands/ (each has `register`).

    apprentice --help
    apprentice [--data-dir D] [--database-url URL] [--model M] <command> ...

Domain errors print as one line `error: ...` with exit status 1; nothing prints a traceback for a user mistake.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from pydantic import ValidationError

from app import commands
from app.settings import Settings, get_settings
from storage.errors import ApprenticeError


def common_options() -> argparse.ArgumentParser:
    """Settings flags, accepted before or after the subcommand name (SUPPRESS keeps a later one from erasing)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("settings (also APPRENTICE_* environment variables)")
    group.add_argument("--data-dir", default=argparse.SUPPRESS, help="data directory (APPRENTICE_HOME; ./data)")
    group.add_argument("--database-url", default=argparse.SUPPRESS, help="SQLAlchemy URL (APPRENTICE_DATABASE_URL)")
    group.add_argument("--model", default=argparse.SUPPRESS, help="base model (APPRENTICE_MODEL; builtin)")
    group.add_argument("--model-cache", default=argparse.SUPPRESS, help="model cache (APPRENTICE_MODEL_CACHE)")
    return parent


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = argparse.ArgumentParser(
        prog="apprentice", description="A chat model that learns from its users' corrections.", parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"app.commands.{info.name}").register(sub, common)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    keys = ("data_dir", "database_url", "model", "model_cache", "host", "port")
    return get_settings(**{k: getattr(args, k, None) for k in keys})


def settings_error(error: ValidationError) -> str:
    """One line per bad setting, naming its flag/environment variable and the value given."""
    parts = []
    for item in error.errors():
        name = ".".join(str(x) for x in item["loc"])
        parts.append(f"setting {name} (APPRENTICE_{name.upper()}): {item['msg']} (got {item.get('input')!r})")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except ValidationError as e:
        print(f"error: {settings_error(e)}", file=sys.stderr)
        return 1
    try:
        return args.handler(args, settings) or 0
    except ApprenticeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
