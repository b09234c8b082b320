"""`apprentice import FILE` and `apprentice export`: demonstrations, probes and eval results as files.

    apprentice import demos.jsonl --approve            # our format or TRL's {"prompt", "privileged_context"}
    apprentice import probes.jsonl [--strict]          # kind detected from the file, or --kind
    apprentice export --kind demos --format trl --out train.jsonl
    apprentice export --kind evals --out evals.csv
    apprentice export --kind ratings --out ratings.jsonl   # thumbs up / down with reasons (export only)

An import lists each bad line as `line N: reason` on stderr and exits 1 when there was any; the good lines land
unless --strict. Formats are described in learner/exchange.py and the README.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.services import open_database
from app.settings import Settings
from learner.exchange import EXPORT_KINDS, FORMATS, KINDS, export_text, import_text
from storage.errors import ApprenticeError
from storage.models import DEMO_STATUSES


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    imp = sub.add_parser("import", help="import demonstrations, probes or eval results from a file", parents=[common])
    imp.add_argument("file", help="JSONL (demonstrations, probes) or CSV (eval results) file; '-' for stdin")
    imp.add_argument("--kind", choices=KINDS, help="what the file holds (default: detected from its first line)")
    imp.add_argument("--approve", action="store_true", help="demonstrations land approved, ready for training")
    imp.add_argument("--strict", action="store_true", help="all or nothing: any bad line and nothing is imported")
    imp.add_argument("--skill", help="skill for records that name none")
    imp.set_defaults(handler=import_command)
    exp = sub.add_parser(
        "export", help="export demonstrations, probes, eval results or ratings of replies", parents=[common]
    )
    exp.add_argument("--kind", choices=EXPORT_KINDS, required=True)
    formats = sorted({f for fs in FORMATS.values() for f in fs})
    exp.add_argument(
        "--format",
        choices=formats,
        help="demos: ours|trl; probes: ours; evals: csv|ours; ratings: ours (default: first)",
    )
    exp.add_argument(
        "--status", choices=DEMO_STATUSES, help="demonstrations in this state only (trl default: approved)"
    )
    exp.add_argument("--out", help="file to write (default: stdout)")
    exp.set_defaults(handler=export_command)


def import_command(args: argparse.Namespace, settings: Settings) -> int:
    text = _read(args.file)
    db = open_database(settings)
    report = import_text(db, text, kind=args.kind, approve=args.approve, strict=args.strict, skill=args.skill)
    for number, message in report.bad:
        print(f"{args.file} line {number}: {message}", file=sys.stderr)
    print(report.summary())
    return 1 if report.bad else 0


def export_command(args: argparse.Namespace, settings: Settings) -> int:
    text, count = export_text(open_database(settings), kind=args.kind, fmt=args.format, status=args.status)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"exported {count} record(s) to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _read(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    try:
        return Path(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ApprenticeError(f"no such file: {name}") from None
    except UnicodeDecodeError as e:
        raise ApprenticeError(f"{name} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ApprenticeError(f"cannot read {name}: {e.strerror}") from None
