"""`apprentice bench lifelong`: many small rounds under the gate, as users run Apprentice (app/bench/lifelong.py).

apprentice bench lifelong [--quick] [--facts PATH] [--rounds R] [--per-round K] [--method sdft|sft|both]
                          [--seeds N] [--set FIELD=VALUE] [--json PATH] [--out DIR] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from app.bench.facts import FACTS
from app.bench.lifelong import LifelongOptions
from app.bench.lifelong_report import run_lifelong
from app.commands.bench_learn import parse_overrides as parse_method_overrides
from app.commands.learn import parse_overrides
from app.services import model_folder
from app.settings import Settings
from storage.errors import ApprenticeError


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Nothing at the top level: `lifelong` lives under `apprentice bench`."""


def add_parser(actions: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = actions.add_parser(
        "lifelong",
        parents=[common],
        help="many small rounds through the real round code and gate: what the live model keeps and learns",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="1 seed, 3 rounds of 4 facts, 60 general probes, both methods (< 15 min on 2 CPU cores)",
    )
    p.add_argument("--facts", type=Path, help="fact file (bench learn's JSONL format); default: the shipped facts")
    p.add_argument("--names", type=Path, help="made-up names for the leakage count (default: from the facts)")
    p.add_argument(
        "--split",
        choices=("all", "tune", "report"),
        default="all",
        help="teach all facts, or only the tune or report split (variants are chosen on tune)",
    )
    p.add_argument("--rounds", type=int, help="rounds (default 8; --quick 3)")
    p.add_argument("--per-round", type=int, help="facts taught per round (default 6; --quick 4)")
    p.add_argument("--method", choices=("sdft", "sft", "both"), default="both")
    p.add_argument("--seeds", type=int, help="number of seeds, 0..N-1 (default 3; --quick 1)")
    p.add_argument("--general-n", type=int, help="a fixed subset of N general probes (default: all; --quick 60)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="[METHOD.]FIELD=VALUE",
        help="override a LearnerConfig field for both methods, or for one with sdft./sft.",
    )
    p.add_argument("--json", type=Path, help="where to write the JSON report (default: OUT/bench_lifelong.json)")
    p.add_argument("--out", type=Path, default=Path("bench-out/lifelong"), help="output and cache folder (resumable)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads per job (0: cores / workers)")
    p.add_argument("--workers", type=int, default=0, help="jobs (method x seed) run at once (0: one per job, <= cores)")
    p.add_argument("--report-only", action="store_true", help="run nothing: report the rounds already cached")
    p.set_defaults(handler=lifelong_command)  # fmt: skip


def overrides_by_method(items: list[str], methods: list[str]) -> dict[str, dict[str, Any]]:
    """`FIELD=VALUE` applies to every method, `METHOD.FIELD=VALUE` to one (it wins)."""
    shared = parse_overrides([i for i in items if i.split("=", 1)[0].split(".", 1)[0] not in ("sdft", "sft")])
    own = parse_method_overrides([i for i in items if i.split("=", 1)[0].split(".", 1)[0] in ("sdft", "sft")])
    return {m: {**shared, **own.get(m, {})} for m in methods}


def lifelong_command(args: argparse.Namespace, settings: Settings) -> int:

    quick = LifelongOptions.quick_defaults() if args.quick else {}
    seeds = args.seeds if args.seeds is not None else len(quick.get("seeds", [0, 1, 2]))
    rounds = args.rounds or quick.get("rounds", 8)
    per_round = args.per_round or quick.get("per_round", 6)
    if min(seeds, rounds, per_round) < 1:
        raise ApprenticeError("--seeds, --rounds and --per-round must be at least 1")
    methods = ["sdft", "sft"] if args.method == "both" else [args.method]
    cores = os.cpu_count() or 1
    workers = args.workers or min(len(methods) * seeds, cores)
    threads = args.threads or (max(1, cores // workers) if workers > 1 else 0)
    options = LifelongOptions(
        model_dir=model_folder(settings),
        out_dir=args.out,
        json_path=args.json,
        model_name=settings.model,
        facts_path=args.facts or FACTS,
        names_path=args.names,
        split=args.split,
        rounds=rounds,
        per_round=per_round,
        methods=methods,
        seeds=list(range(seeds)),
        general_n=args.general_n if args.general_n is not None else quick.get("general_n"),
        overrides=overrides_by_method(args.set, methods),
        threads=threads,
    )
    try:
        run_lifelong(options, workers=workers, run_jobs=not args.report_only)
    except ValueError as e:
        raise ApprenticeError(str(e)) from None
    print((args.out / "bench_lifelong.md").read_text())
    print(f"wrote {args.json or args.out / 'bench_lifelong.json'} and plots in {args.out}", file=sys.stderr)
    return 0
