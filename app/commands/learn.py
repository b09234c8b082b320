"""`apprentice learn --now | --daemon`: run one learning round now, or the learning schedule as its own process.

    apprentice learn --now [--method sdft|sft] [--activate | --no-gate] [--steps N] [--preset builtin] [--set lr=1e-4]
    apprentice learn --now --nproc 2  # data-parallel: 2 processes (gloo on CPU; NCCL with one GPU each)
    apprentice learn --daemon        # the scheduler of `apprentice serve`, alone (set APPRENTICE_LEARN_IN_SERVER=0)
    apprentice learn --config        # the effective LearnerConfig with each field's help

After a round, app/services/learning.finish_round runs the promotion gate (the settings' gate_margin and
gate_min_probes) and makes a promoted version live, unless `--activate` (live at once) or `--no-gate` (left a
candidate); the daemon does the same after each scheduled round, and at start gates a candidate a round left
ungated. Every round writes its steps, then the gate's scores, as TensorBoard events under
<data dir>/tensorboard/round-<id>/ (`tensorboard --logdir <data dir>/tensorboard`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import threading
from typing import Any

from app.services import model_folder, open_database
from app.services.learning import finish_round, learn_job, outcome_of, round_config, ungated
from app.settings import Settings
from learner.config import LearnerConfig
from learner.evaluate import EvalConfig
from learner.gate import verdict
from learner.rounds import RoundOutcome, run_round
from learner.scheduler import start_scheduler
from learner.tensorboard_events import run_folder
from storage.errors import ApprenticeError


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("learn", help="learn from approved demonstrations (one round now, or on a schedule)",
                            parents=[common])  # fmt: skip
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--now", action="store_true", help="run one round now and wait for it")
    mode.add_argument("--daemon", action="store_true", help="run the learning schedule until stopped")
    mode.add_argument("--config", action="store_true", help="print the effective learner configuration and exit")
    parser.add_argument("--method", choices=("sdft", "sft"), help="training method (APPRENTICE_LEARN_METHOD; sdft)")
    gating = parser.add_mutually_exclusive_group()
    gating.add_argument("--activate", action="store_true", help="make each new version live at once (no gate)")
    gating.add_argument("--no-gate", action="store_true",
                        help="leave each new version a candidate (default: the promotion gate evaluates it and makes "
                        "it live if it passes; APPRENTICE_GATE_MARGIN, APPRENTICE_GATE_MIN_PROBES)")  # fmt: skip
    parser.add_argument("--steps", type=int, help="optimizer steps (default: from epochs and the demonstrations)")
    parser.add_argument("--preset", help="learner preset: builtin, 4b or paper (APPRENTICE_LEARN_PRESET)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a LearnerConfig field (JSON value or text); repeatable")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the outcome and the gate's decision as JSON (--now)")
    parser.add_argument("--nproc", type=int, default=1,
                        help="train data-parallel in N processes (--now; on CUDA one GPU each; default 1)")  # fmt: skip
    parser.set_defaults(handler=learn_command)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ApprenticeError(f"--set wants FIELD=VALUE, got {pair!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def config_from(args: argparse.Namespace, settings: Settings) -> LearnerConfig:
    return round_config(settings, preset=args.preset, method=args.method, steps=args.steps,
                        overrides=parse_overrides(args.set))  # fmt: skip


def learn_command(args: argparse.Namespace, settings: Settings) -> int:
    if args.nproc < 1 or (args.nproc > 1 and not args.now):
        raise ApprenticeError("--nproc wants a number >= 1, and goes with --now")
    config = config_from(args, settings)
    if args.config:
        helps = LearnerConfig.fields_help()
        for key, value in config.to_dict().items():
            print(f"{key} = {json.dumps(value)}\n    {helps[key]}")
        return 0
    if args.daemon:
        if args.activate:
            settings = settings.model_copy(update={"learn_activate": True})
        return daemon(settings, config, gate=not args.no_gate)
    return learn_now(args, settings, config)


def quiet_libraries() -> None:
    """No per-load progress bars or deprecation chatter from transformers/peft under our own tqdm bar."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)


def learn_now(args: argparse.Namespace, settings: Settings, config: LearnerConfig) -> int:
    from tqdm import tqdm

    quiet_libraries()
    db = open_database(settings)
    folder = model_folder(settings)
    bar = tqdm(desc=f"{config.method} round", unit="step", disable=args.json)

    def on_step(record: dict[str, Any], progress: float) -> None:
        if bar.total is None and progress > 0:
            bar.total = round(record["step"] / progress)
        shown = {"loss": record["loss"], "kl": record.get("kl"), "s/step": record["seconds"]}
        bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items() if v is not None})
        bar.update(1)

    try:
        outcome = run_round(
            db, model_dir=folder, data_dir=settings.data_dir, config=config, activate=args.activate,
            on_step=on_step, nproc=args.nproc,
        )  # fmt: skip
    finally:
        bar.close()
    if not args.json:
        for item in outcome.skipped:
            print(f"skipped: {item['reason']}")
        print(outcome.message, flush=True)
        if outcome.round_id is not None:
            logdir = run_folder(settings.data_dir, outcome.round_id).parent
            print(f"its steps for TensorBoard: tensorboard --logdir {logdir} (run round-{outcome.round_id})")
    policy = "activated" if args.activate else "candidate" if args.no_gate else "gate"
    if policy == "gate" and outcome.status == "succeeded" and outcome.version and not args.json:
        print(f"gate: evaluating {outcome.version} and the live version on every skill", flush=True)
    result = finish_round(db, outcome, model_folder=folder, policy=policy, gate_config=settings.gate_config(),
                          eval_config=EvalConfig(progress=not args.json), data_dir=settings.data_dir)  # fmt: skip
    gate = None
    if result.gate is not None:
        gate = {"promoted": result.gate.promote, "reason": result.gate.reason,
                "checks": [dataclasses.asdict(c) for c in result.gate.checks]}  # fmt: skip
        if not args.json:
            for check in result.gate.checks:
                print(f"  {check.describe()}")
            print(verdict(outcome.version, result.gate))
    error = f"{result.gate_error}; {outcome.version} stays a candidate" if result.gate_error else None
    if args.json:
        document = {k: v for k, v in vars(outcome).items() if k != "metrics"} | {"metrics": outcome.metrics}
        print(json.dumps(document | {"gate": gate} | ({"error": error} if error else {})))
    elif error:
        print(f"error: {error}", file=sys.stderr)
    return 1 if error else 0


def daemon(settings: Settings, config: LearnerConfig, *, gate: bool = True) -> int:
    db = open_database(settings)
    stop = threading.Event()
    folder = model_folder(settings)
    policy = "activated" if settings.learn_activate else "gate" if gate else "candidate"

    def finish(outcome: RoundOutcome) -> None:
        result = finish_round(db, outcome, model_folder=folder, policy=policy, gate_config=settings.gate_config(),
                              data_dir=settings.data_dir)  # fmt: skip
        print(f"[learn] {result.status}: {result.message}", flush=True)

    if policy == "gate":  # a round this daemon ran before it stopped may have missed its gate
        for outcome in ungated(db):
            finish(outcome)

    scheduler = start_scheduler(
        learn_job(settings, config),
        interval_minutes=settings.learn_interval_minutes,
        cron=settings.learn_cron,
        misfire_grace_s=settings.learn_misfire_grace_s,
        on_result=lambda result: finish(outcome_of(result)),
        run_now=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    when = f"cron {settings.learn_cron!r}" if settings.learn_cron else f"every {settings.learn_interval_minutes:g} min"
    if settings.learn_activate:
        then = "new versions go live at once (no gate)"
    elif gate:
        margin, least = f"{100 * settings.gate_margin:g}", settings.gate_min_probes
        then = f"then the gate (margin {margin} points on skills with {least}+ probes)"
    else:
        then = "new versions stay candidates (no gate)"
    print(f"learning daemon on {settings.db_url}: {when}, at least {settings.learn_min_demos} new demos, {then}",
          flush=True)  # fmt: skip
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        scheduler.shutdown(wait=True)
    return 0
