"""Learning rounds as the app runs them, and the one pipeline after every round.

`finish_round(db, outcome, ...)` is what follows a round on every path (`apprentice learn --now`, the learning daemon,
the server's scheduled rounds, the admin's "Train now"): unless the round made its version live at once
(learn_activate / --activate) or the caller left it a candidate (--no-gate), the promotion gate evaluates it and
records its verdict in the database (learner.gate.gate_candidate), then a promoted candidate goes live through the one
activation rule (app/services/versions.activate). A server then hot-swaps (`finish_round_live`). A candidate a round
wrote but no gate judged (a restart between the round and its gate) is found and gated when a learning server or
daemon starts (`gate_ungated`).

    result = finish_round(db, outcome, model_folder=folder, gate_config=settings.gate_config(), data_dir=data_dir)
    print(result.message)      # round 3 succeeded: ...; gate: v3 is live (promoted: geo 40.0->60.0, ...)

A round's configuration is the deployment's with a method, budget or fields on top (`round_config`: what
`apprentice learn --now --method/--steps/--set` and the admin's "Train now" both use); `preview_round` says what a
round would learn before it starts. The gate's scores join the round's TensorBoard run (learner.tensorboard_events)
when `finish_round` is given the data directory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine as Database

from app.services import model_folder
from app.services.versions import activate, sync_engine
from app.settings import Settings
from app.state import AppState
from learner.config import LearnerConfig
from learner.evaluate import EvalConfig
from learner.gate import GateConfig, GateDecision, gate_candidate, trained_skills, verdict
from learner.rounds import RoundOutcome, plan_round
from learner.scheduler import LearnJob, start_scheduler
from learner.tensorboard_events import write_gate
from storage import demonstrations, rounds, versions
from storage.errors import ApprenticeError
from storage.models import Demonstration

log = logging.getLogger(__name__)

# What follows a round that wrote a version: the gate decides; the round made it live already; it stays a candidate.
Policy = Literal["gate", "activated", "candidate"]


@dataclass(frozen=True)
class RoundResult:
    """A round and what followed it."""

    status: str  # the round's: succeeded | nothing | waiting | busy | failed
    message: str  # the round's message, then the gate's verdict or why there was none
    round_id: int | None = None
    version: str | None = None  # the version the round wrote
    gate: GateDecision | None = None  # None when no gate judged the version
    gate_error: str | None = None  # the gate could not run or could not make the version live: it stays a candidate
    live: bool = False  # the version is the active one in the database
    swapped: bool = False  # this server's engine serves it already

    def to_json(self) -> dict[str, Any]:
        """The admin job's result: status, message, round, version, and after a gate, promoted and gate (its reason)."""
        out: dict[str, Any] = {"status": self.status, "message": self.message, "round": self.round_id,
                               "version": self.version, "live": self.live}  # fmt: skip
        if self.gate is not None:
            out |= {"promoted": self.gate.promote, "gate": self.gate.reason}
        elif self.gate_error is not None:
            out |= {"promoted": False, "gate": self.gate_error}
        return out


def outcome_of(result: dict[str, Any]) -> RoundOutcome:
    """A scheduled round's result (learner.scheduler.scheduled_round: a plain dict from the worker) as an outcome."""
    return RoundOutcome(result.get("status", "failed"), result.get("message", ""), result.get("round"),
                        result.get("version"))  # fmt: skip


def finish_round(
    db: Database,
    outcome: RoundOutcome,
    *,
    model_folder: str,
    policy: Policy = "gate",
    gate_config: GateConfig = GateConfig(),
    eval_config: EvalConfig = EvalConfig(),
    data_dir: Path | None = None,
) -> RoundResult:
    """What follows a round: the gate (its verdict recorded in the database first), then a promoted candidate made
    the active version by the one activation rule. Never raises for the gate: a gate that cannot run leaves the
    version a candidate and says why (the round itself succeeded). With `data_dir`, the gate's scores are added to
    the round's TensorBoard run."""
    base = RoundResult(outcome.status, outcome.message, outcome.round_id, outcome.version)
    if outcome.status != "succeeded" or not outcome.version:
        return base
    candidate = outcome.version
    if policy == "activated":
        return dataclasses.replace(base, live=True)
    if policy == "candidate":
        versions.set_reason(db, name=candidate, reason="not gated: left a candidate (learn --no-gate)")
        return base

    try:
        live = versions.active_version(db).name
        decision = gate_candidate(db, model_folder, candidate=candidate, trained_skills=trained_skills(db, candidate),
                                  live=live, config=gate_config, eval_config=eval_config)  # fmt: skip
        if decision.promote:
            now = versions.active_version(db).name
            if now != live:
                why = f"not promoted: the live version changed from {live} to {now} while the gate ran"
                versions.set_reason(db, name=candidate, reason=f"{why}; judged against {live}")
                decision = GateDecision(False, why, decision.checks)
            else:
                activate(db, candidate)
    except Exception as e:  # e.g. a damaged adapter or no probes: report it, the round's version stays a candidate
        if not isinstance(e, ApprenticeError):
            log.exception("the gate of %s failed", candidate)
        why = f"the gate failed ({e if isinstance(e, ApprenticeError) else f'{type(e).__name__}: {e}'})"
        return dataclasses.replace(base, message=f"{outcome.message}; {why}; {candidate} stays a candidate",
                                   gate_error=why)  # fmt: skip
    line = verdict(candidate, decision)
    log.info("%s", line)
    if data_dir is not None and outcome.round_id is not None:
        gate_events(db, data_dir, outcome.round_id, decision)
    return dataclasses.replace(base, message=f"{outcome.message}; {line}", gate=decision, live=decision.promote)


def gate_events(db: Database, data_dir: Path, round_id: int, decision: GateDecision) -> None:
    """The gate's scores into the round's TensorBoard run, at its last recorded step."""
    try:
        last = max((s.get("step", 0) for s in rounds.get_round(db, round_id=round_id).steps), default=0)
        write_gate(data_dir, round_id, decision, step=last)
    except Exception:  # the verdict is in the database already; its event file is a view of it
        log.warning("round %s: the gate's TensorBoard events were not written", round_id, exc_info=True)


async def finish_round_live(state: AppState, outcome: RoundOutcome, *, policy: Policy = "gate") -> RoundResult:
    """`finish_round` in a server, then the hot swap to a version that went live. If the engine cannot load it, the
    version live before is made active again and the error is raised."""
    settings = state.settings
    previous = (await asyncio.to_thread(versions.active_version, state.db)).name
    result = await asyncio.to_thread(finish_round, state.db, outcome, model_folder=model_folder(settings),
                                     policy=policy, gate_config=settings.gate_config(),
                                     data_dir=settings.data_dir)  # fmt: skip
    if not result.live:
        return result
    try:
        await sync_engine(state)
    except BaseException:
        if result.gate is not None and previous != result.version:
            await asyncio.to_thread(versions.set_active, state.db, name=previous)
        raise
    return dataclasses.replace(result, swapped=True)


def ungated(db: Database) -> list[RoundOutcome]:
    """Candidates a round wrote that no gate judged (the process stopped between the round and its gate)."""
    return [
        RoundOutcome("succeeded", f"version {v.name} of round {v.round_id} was left ungated", v.round_id, v.name)
        for v in versions.ungated_candidates(db)
    ]


async def gate_ungated(state: AppState) -> list[RoundResult]:
    """At a learning server's start: gate every candidate left ungated, oldest first (one failing does not stop
    the others)."""
    results = []
    for outcome in await asyncio.to_thread(ungated, state.db):
        try:
            results.append(await finish_round_live(state, outcome))
            log.info("%s", results[-1].message)
        except Exception:
            log.exception("gating %s, left ungated, failed", outcome.version)
    return results


def learn_job(settings: Settings, config: LearnerConfig) -> LearnJob:
    """The scheduled round of these settings (the worker trains; its caller runs finish_round on the result)."""
    return LearnJob(
        db_url=settings.db_url,
        data_dir=str(settings.data_dir.resolve()),
        model_dir=model_folder(settings),
        config=config.to_dict(),
        min_demos=settings.learn_min_demos,
        activate=settings.learn_activate,
    )


def round_config(
    settings: Settings,
    *,
    preset: str | None = None,
    method: str | None = None,
    steps: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> LearnerConfig:
    """One round's LearnerConfig: the deployment's (its preset, learn_method, learn_config) with another preset, a
    method, a budget (optimizer steps; 0 derives them from epochs) and any fields on top. Bad values raise
    ApprenticeError."""
    if preset:
        settings = settings.model_copy(update={"learn_preset": preset})
    changes = dict(overrides or {})
    if method:
        changes["method"] = method
    if steps is not None:
        changes["steps"] = steps
    return settings.learner_config(**changes)


@dataclass(frozen=True)
class RoundPreview:
    """What a round would learn if it started now, and its budget."""

    parent: str  # the live version it continues
    new: list[Demonstration]  # approved demonstrations it learns
    replay: list[Demonstration]  # already learned ones it rehearses
    skipped: list[dict[str, Any]]  # {"demonstration", "reason"}: over a length budget or malformed
    steps: int  # optimizer steps its config gives
    budget: str  # how those steps come about, in words

    @property
    def demo_ids(self) -> list[int]:
        return [d.id for d in self.new]


def budget_words(config: LearnerConfig, prompts: int) -> str:
    steps = config.optimizer_steps(prompts)
    if config.steps:
        return f"{steps} optimizer steps (steps={config.steps})"
    per_step = min(config.batch_size, max(prompts, 1))
    return (f"{steps} optimizer steps ({config.epochs:g} passes over {prompts} prompt(s), {per_step} per step, "
            f"at least {config.min_steps})")  # fmt: skip


def preview_round(db: Database, settings: Settings, config: LearnerConfig) -> RoundPreview:
    """The demonstrations a round with `config` would take now (as learner.rounds.run_round selects them)."""
    plan = plan_round(db, model_folder(settings), config)
    by_id = {d.id: d for d in demonstrations.get_demonstrations(db, ids=plan.new_ids + plan.replay_ids)}
    steps = plan.steps(config)
    return RoundPreview(
        parent=plan.parent.name,
        new=[by_id[i] for i in plan.new_ids if i in by_id],
        replay=[by_id[i] for i in plan.replay_ids if i in by_id],
        skipped=plan.skipped,
        steps=steps,
        budget=budget_words(config, len(plan.examples)),
    )


def start_learning(settings: Settings, **kwargs: Any) -> Any | None:
    """The web app's learning schedule from the settings: a started BackgroundScheduler (call .shutdown() on exit),
    or None when it is off (learn_in_server false, or neither an interval nor a cron schedule). Pass
    `on_result=after_scheduled_round(state, loop)` to gate each round and hot-swap at once."""
    if not settings.learn_in_server or (settings.learn_interval_minutes <= 0 and not settings.learn_cron):
        return None
    return start_scheduler(
        learn_job(settings, settings.learner_config()),
        interval_minutes=settings.learn_interval_minutes,
        cron=settings.learn_cron,
        misfire_grace_s=settings.learn_misfire_grace_s,
        **kwargs,
    )


def after_scheduled_round(state: AppState, loop: asyncio.AbstractEventLoop) -> Callable[[dict[str, Any]], None]:
    """The server's `on_result` for scheduled rounds (called on the scheduler's thread): finish_round_live on the
    server's loop, exactly as the admin's "Train now" does."""
    policy: Policy = "activated" if state.settings.learn_activate else "gate"

    def on_result(result: dict[str, Any]) -> None:
        log.info("scheduled learning round: %s", result.get("message"))
        asyncio.run_coroutine_threadsafe(finish_round_live(state, outcome_of(result), policy=policy), loop)

    return on_result
