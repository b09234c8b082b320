"""`apprentice export-model NAME --out DIR`: a version as a plain transformers model folder (adapter merged)."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.services import model_folder, open_database
from app.services.export_model import export_merged
from app.settings import Settings


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "export-model",
        help="write a version as a plain transformers folder: the base model with its adapter merged",
        parents=[common],
    )
    parser.add_argument("name", help="the version (see `apprentice versions`)")
    parser.add_argument("--out", required=True, help="a new (or empty) folder to write")
    parser.set_defaults(handler=export_command)


def export_command(args: argparse.Namespace, settings: Settings) -> int:

    out = export_merged(open_database(settings), name=args.name, base_folder=model_folder(settings), out=Path(args.out))
    print(f"exported {args.name} to {out} (load it with AutoModelForCausalLM.from_pretrained or vLLM)")
    return 0
