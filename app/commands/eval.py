"""`apprentice eval [--version NAME] [--skill S] [--json [PATH]]`: score a version on every skill and store it.

Greedy and deterministic (see learner/evaluate.py). The table goes to stdout; `--json` alone prints the JSON
document instead, `--json PATH` writes it to a file as well:
    {"version": NAME, "skills": {SKILL: {"score": 0..1, "n": PROBES}}}
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.services import model_folder, open_database
from app.settings import Settings
from learner.evaluate import EvalConfig, EvalReport, evaluate_version
from storage.versions import active_version


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("eval", help="score a model version on every skill's probes", parents=[common])
    parser.add_argument("--version", help="version name (default: the active version)")
    parser.add_argument("--skill", action="append", help="only this skill (repeatable; default: every skill)")
    parser.add_argument(
        "--json", nargs="?", const="-", metavar="PATH", help="write the scores as JSON ('-' or none: stdout)"
    )
    parser.add_argument("--batch-size", type=int, default=EvalConfig.batch_size, help="prompts generated together")
    parser.add_argument("--max-new-tokens", type=int, default=EvalConfig.max_new_tokens, help="reply length limit")
    parser.set_defaults(handler=eval_command)


def eval_command(args: argparse.Namespace, settings: Settings) -> int:
    db = open_database(settings)
    version = args.version or active_version(db).name
    config = EvalConfig(batch_size=max(1, args.batch_size), max_new_tokens=max(1, args.max_new_tokens), progress=True)
    report = evaluate_version(db, model_folder(settings), version, skills=args.skill, config=config)
    document = json.dumps(report.to_json(), indent=2)
    if args.json == "-":
        print(document)
        return 0
    print(format_table(report))
    if args.json:
        Path(args.json).write_text(document + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def format_table(report: EvalReport) -> str:
    lines = [f"version {report.version}: {len(report.probes)} probes in {report.seconds:.0f} s", ""]
    lines.append(f"{'skill':<32} {'score':>7} {'n':>5}")
    for skill, result in report.skills.items():
        lines.append(f"{skill:<32} {100 * result.score:>6.1f}% {result.n:>5}")
        if len(result.categories) > 1:
            for category, c in result.categories.items():
                lines.append(f"  {category:<30} {100 * c['score']:>6.1f}% {c['n']:>5}")
    return "\n".join(lines)
