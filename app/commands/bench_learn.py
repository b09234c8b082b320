"""`apprentice bench learn`: the learning benchmark (base vs SFT vs SDFT; see app/bench/learn.py).

    apprentice bench learn [--quick] [--facts PATH] [--seeds N] [--json PATH] [--out DIR]

`add_parser(actions, common)` adds the `learn` action to the `bench` group (app/commands/bench.py finds it by the
module name); `register` adds nothing at the top level.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from app.bench.facts import FACTS
from app.bench.learn import BenchOptions
from app.bench.learn_report import run_bench
from app.services import model_folder
from app.settings import Settings
from storage.errors import ApprenticeError


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Nothing at the top level: `learn` lives under `apprentice bench` (see add_parser)."""


def add_parser(actions: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = actions.add_parser(
        "learn",
        parents=[common],
        help="does the model learn facts from demonstrations without forgetting? base/SFT/SDFT",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="1 seed, 4 report facts per skill, default points only, 2 sequential rounds, 60 general "
        "probes (< 15 min on 2 CPU cores)",
    )
    p.add_argument("--facts", type=Path, help="fact file (JSONL, see README); default: the shipped facts")
    p.add_argument("--names", type=Path, help="made-up names for the leakage count (default: from the facts)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1; --quick uses 1)")
    p.add_argument("--json", type=Path, help="where to write the JSON report (default: OUT/bench_learn.json)")
    p.add_argument("--out", type=Path, default=Path("bench-out"), help="output and cache folder (resumable)")
    p.add_argument("--general-n", type=int, help="score a fixed subset of N general-suite probes (default: all)")
    p.add_argument("--lr", type=float, action="append", help="frontier learning rates (repeatable; 1e-4 3e-4 1e-3)")
    p.add_argument(
        "--steps-factor",
        type=float,
        action="append",
        help="frontier steps as multiples of the default point's (repeatable; 0.5 1)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="METHOD.FIELD=VALUE",
        help="override a LearnerConfig field for one method, e.g. sdft.temperature=0.7",
    )
    p.add_argument("--no-sequential", action="store_true", help="skip the sequential-skills rounds (variant sweeps)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--workers", type=int, default=1, help="jobs run in parallel processes (for a GPU or many cores)")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: write the report from the jobs already cached in --out (a partial run's numbers)",
    )
    p.set_defaults(handler=learn_command)


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot or method not in ("sft", "sdft"):
            raise ApprenticeError(f"--set {item!r}: expected METHOD.FIELD=VALUE with METHOD sft or sdft")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(method, {})[name] = parsed
    return out


def learn_command(args: argparse.Namespace, settings: Settings) -> int:

    if args.seeds < 1:
        raise ApprenticeError("--seeds must be at least 1")
    options = BenchOptions(
        model_dir=model_folder(settings),
        out_dir=args.out,
        json_path=args.json,
        model_name=settings.model,
        facts_path=args.facts or FACTS,
        names_path=args.names,
        seeds=list(range(1 if args.quick else args.seeds)),
        quick=args.quick,
        general_n=args.general_n if args.general_n is not None else (60 if args.quick else None),
        overrides=parse_overrides(args.set),
        threads=args.threads,
        sequential=not args.no_sequential,
    )
    if args.lr:
        options.learning_rates = args.lr
    if args.steps_factor:
        options.step_factors = args.steps_factor
    report = run_bench(options, workers=args.workers, run_jobs=not args.report_only)
    print((args.out / "bench_learn.md").read_text())
    print(f"wrote {args.json or args.out / 'bench_learn.json'} and plots in {args.out}", file=sys.stderr)
    return 0 if report else 1
