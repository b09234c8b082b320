"""`apprentice model fetch`: prepare the base model (convert the built-in one into the shared cache, verify it)."""

from __future__ import annotations

import argparse

from app.services import model_folder
from app.settings import Settings
from learner.model_files import BUILTIN, load_tokenizer, verify_builtin


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("model", help="base model files", parents=[common])
    actions = parser.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    fetch = actions.add_parser("fetch", help="prepare the base model for offline use and verify it", parents=[common])
    fetch.set_defaults(handler=fetch_command)


def fetch_command(args: argparse.Namespace, settings: Settings) -> int:
    folder = model_folder(settings)
    load_tokenizer(folder)  # refuses a model without a chat template
    if settings.model == BUILTIN:
        manifest = verify_builtin(settings.model_cache)
        print(f"{BUILTIN} ready in {folder} (checksums verified: {', '.join(manifest['files'])})")
    else:
        print(f"{settings.model} ready ({folder})")
    return 0
