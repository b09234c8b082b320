"""`apprentice bench ACTION`: benchmarks. `serve` measures the serving core (app/bench/serve.py); other actions come
from modules named app/commands/bench_<action>.py that define `add_parser(actions, common)`.

    apprentice bench serve [--json PATH] [--quick]
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
from pathlib import Path

from app import commands
from app.settings import Settings


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("bench", help="benchmarks (serve, ...)", parents=[common])
    actions = parser.add_subparsers(dest="bench_command", required=True, metavar="ACTION")
    serve = actions.add_parser(
        "serve", help="throughput, hot swap under load and API overhead of the serving core", parents=[common]
    )
    serve.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    serve.add_argument("--quick", action="store_true", help="a short run (fewer tokens and swaps) to try it out")
    serve.add_argument("--device", help="engine device: auto, cpu, cuda (APPRENTICE_DEVICE; auto)")
    serve.add_argument("--threads", type=int, default=0, help="CPU threads (default: as `serve`, cores - 1)")
    serve.set_defaults(handler=serve_command)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("bench_"):
            importlib.import_module(f"app.commands.{info.name}").add_parser(actions, common)


def serve_command(args: argparse.Namespace, settings: Settings) -> int:
    from app.bench.serve import BenchConfig, run_serve_bench, summary  # torch: only for this action

    if args.device:
        settings = settings.model_copy(update={"device": args.device})
    cfg = BenchConfig(tokens=24, rounds=1, swaps=4, swap_tokens=16, steady_seconds=3.0) if args.quick else BenchConfig()
    cfg.threads = args.threads
    result = run_serve_bench(settings, cfg, say=lambda line: print(line, flush=True))
    for line in summary(result):
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0
