"""One learning round against the database: approved demonstrations the live version has not learned (plus an
optional replay sample) -> train (SDFT or SFT) from the live version (or, with train_from=base, a fresh adapter from
the base model on everything the live version learned too) -> a new version directory written atomically
-> the round recorded and the version registered as a candidate.

    outcome = run_round(db, model_dir=folder, data_dir=Path("data"), config=LearnerConfig.preset("builtin"))
    outcome.status   # "succeeded" | "nothing"; a failure raises RoundFailed after recording the error

Only one round runs at a time across processes: the "learner" lease, renewed by a heartbeat thread while training
(a round that loses it stops). A process killed mid-round leaves a "running" round and maybe a `.tmp-*` folder;
whoever takes the lease next (`run_round` or `recover`) marks that round failed and deletes the leftovers. The round
never touches the serving model: it loads its own copy of the base weights.
"""

from __future__ import annotations

import logging
import random
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from learner.adapters import check_version_adapter, remove_leftovers, write_version_dir
from learner.config import LearnerConfig
from learner.model_files import load_tokenizer
from learner.parallel import train_parallel
from learner.prompts import Example, build_prompts
from learner.tensorboard_events import RoundEvents
from storage import demonstrations, leases, rounds, versions
from storage.errors import ApprenticeError, Conflict

LEASE = "learner"
ABANDONED = "the process running this round stopped before it finished (killed or crashed); no version was written"
log = logging.getLogger(__name__)


class RoundFailed(ApprenticeError):
    status = 500


@dataclass
class RoundOutcome:
    status: str  # "succeeded" | "nothing"
    message: str
    round_id: int | None = None
    version: str | None = None
    parent: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)


class Heartbeat(threading.Thread):
    """Renews the lease every ttl/3 seconds; sets `lost` when it cannot (training then stops)."""

    def __init__(self, db: Engine, owner: str, ttl_s: float) -> None:
        super().__init__(daemon=True, name="learner-lease")
        self.db, self.owner, self.ttl_s = db, owner, ttl_s
        self.lost = False
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.ttl_s / 3):
            try:
                ok = leases.renew(self.db, name=LEASE, owner=self.owner, ttl_s=self.ttl_s)
            except Exception:  # a busy database: try again next beat, the expiry leaves slack
                log.warning("could not renew the learner lease", exc_info=True)
                continue
            if not ok:
                self.lost = True
                return

    def stop(self) -> None:
        self._stop_event.set()


def recover(db: Engine, data_dir: Path, *, owner: str | None = None) -> list[int]:
    """Mark rounds left running by a dead process failed and delete their leftovers. Needs the lease: takes it
    briefly unless `owner` already holds it; returns [] when another live process is running a round."""
    own = owner or leases.make_owner()
    if owner is None and not leases.acquire(db, name=LEASE, owner=own, ttl_s=60):
        return []
    try:
        failed = rounds.fail_abandoned(db, error=ABANDONED)
        names = [f"v{i}" for i in failed]
        registered = {v.name for v in versions.list_versions(db)}
        remove_leftovers(data_dir / "versions", [n for n in names if n not in registered])
        for i in failed:
            log.warning("training round %s was abandoned by a dead process; marked failed", i)
        return failed
    finally:
        if owner is None:
            leases.release(db, name=LEASE, owner=own)


def _select(
    db: Engine, parent: str, config: LearnerConfig, only: list[int] | None = None
) -> tuple[list[Any], list[Any]]:
    new = demonstrations.list_unlearned(db, version=parent)
    if only is not None:
        wanted = set(only)
        new = [d for d in new if d.id in wanted]
    replay: list[Any] = []
    if new and config.train_from == "base":
        replay = demonstrations.list_learned(db, version=parent)
    elif new and config.replay_fraction > 0:
        pool = demonstrations.list_learned(db, version=parent)
        k = min(len(pool), round(config.replay_fraction * len(new)))
        replay = random.Random(config.seed).sample(pool, k)
    return new, replay


def _version_name(db: Engine, round_id: int) -> str:
    taken = {v.name for v in versions.list_versions(db)}
    name, n = f"v{round_id}", 1
    while name in taken:
        name, n = f"v{round_id}.{n}", n + 1
    return name


def run_round(
    db: Engine,
    *,
    model_dir: str,
    data_dir: Path,
    config: LearnerConfig,
    parent: str | None = None,
    activate: bool = False,
    min_demos: int = 1,
    on_step: Callable[[dict[str, Any], float], None] | None = None,
    lease_ttl_s: float = 120.0,
    nproc: int = 1,
    demo_ids: list[int] | None = None,
) -> RoundOutcome:
    """Run one round from `parent` (default: the live version); `demo_ids` limits it to those of the unlearned
    approved demonstrations (what a preview showed). Each step goes to the database and to the round's TensorBoard
    events (learner.tensorboard_events). Raises Conflict when another round runs, AdapterCorrupt when the parent's
    adapter fails its checksum, RoundFailed when training or writing failed. `nproc` > 1 trains data-parallel in that
    many processes (learner.parallel)."""
    owner = leases.make_owner()
    if not leases.acquire(db, name=LEASE, owner=owner, ttl_s=lease_ttl_s):
        raise Conflict(f"a learning round is already running ({leases.holder(db, name=LEASE)})")
    beat = Heartbeat(db, owner, lease_ttl_s)
    beat.start()
    try:
        recover(db, data_dir, owner=owner)
        plan = plan_round(db, model_dir, config, parent, demo_ids)
        return _run_locked(db, plan, model_dir, data_dir, config, activate, min_demos, on_step, owner, beat, nproc)
    finally:
        beat.stop()
        leases.release(db, name=LEASE, owner=owner)


@dataclass
class RoundPlan:
    parent: Any  # ModelVersion
    examples: list[Example]  # usable ones: new, then replayed
    new_ids: list[int]
    replay_ids: list[int]
    skipped: list[dict[str, Any]]

    def start_adapter(self, config: LearnerConfig) -> str | None:
        """The adapter training starts from (and whose model teaches and anchors): None is the base model."""
        return None if config.train_from == "base" else self.parent.adapter_path

    def steps(self, config: LearnerConfig) -> int:
        """The optimizer steps `config` gives this round."""
        return config.optimizer_steps(len(self.examples))


def plan_round(
    db: Engine,
    model_dir: str,
    config: LearnerConfig,
    parent_name: str | None = None,
    demo_ids: list[int] | None = None,
) -> RoundPlan:
    """What a round would learn now: unlearned approved demonstrations (only `demo_ids` of them, when given; plus the
    replay sample) that fit their budgets. Reads the database and the tokenizer; trains nothing."""

    parent = versions.get_version(db, name=parent_name) if parent_name else versions.active_version(db)
    new, replay = _select(db, parent.name, config, demo_ids)
    examples = [Example(d.messages, d.corrected_answer, d.id) for d in new + replay]
    prompts, skipped = build_prompts(load_tokenizer(model_dir), examples, config)
    usable = {p.demo_id for p in prompts}
    return RoundPlan(
        parent,
        [e for e in examples if e.demo_id in usable],
        [d.id for d in new if d.id in usable],
        [d.id for d in replay if d.id in usable],
        [{"demonstration": i, "reason": r} for i, r in skipped],
    )


def _run_locked(
    db: Engine,
    plan: RoundPlan,
    model_dir: str,
    data_dir: Path,
    config: LearnerConfig,
    activate: bool,
    min_demos: int,
    on_step: Callable[[dict[str, Any], float], None] | None,
    owner: str,
    beat: Heartbeat,
    nproc: int = 1,
) -> RoundOutcome:
    parent = plan.parent
    if len(plan.new_ids) < min_demos:
        why = f"{len(plan.new_ids)} usable approved demonstration(s) that {parent.name} has not learned"
        return RoundOutcome("nothing", f"nothing to learn: {why} (need {min_demos})", parent=parent.name,
                            skipped=plan.skipped)  # fmt: skip
    check_version_adapter(parent.name, parent.adapter_path, parent.checksum)
    rnd = rounds.create_round(
        db,
        method=config.method,
        parent_version=parent.name,
        hyperparameters=config.to_dict(),
        owner=owner,
        demo_ids=plan.new_ids,
        replay_ids=plan.replay_ids,
        answers={e.demo_id: e.answer for e in plan.examples if e.demo_id is not None},
    )
    try:
        rounds.mark_running(db, round_id=rnd.id)
        name, metrics = _train_and_register(db, plan, rnd.id, model_dir, data_dir, config, on_step, beat, nproc)
    except BaseException as e:
        error = str(e) if isinstance(e, ApprenticeError) else f"{type(e).__name__}: {e}"
        log.error("training round %s failed: %s\n%s", rnd.id, error, traceback.format_exc())
        try:
            rounds.fail_round(db, round_id=rnd.id, error=error or type(e).__name__)
        except Conflict:  # already marked failed (e.g. recovered by another process after a lost lease)
            pass
        if isinstance(e, Exception):
            raise RoundFailed(f"training round {rnd.id} failed: {error}") from e
        raise
    if activate:
        versions.set_active(db, name=name)
    replayed = f" + {len(plan.replay_ids)} replayed" if plan.replay_ids else ""
    message = (
        f"round {rnd.id} succeeded: version {name} ({'active' if activate else 'candidate'}) from {parent.name}, "
        f"{len(plan.new_ids)} demonstration(s){replayed}, {metrics['steps']} steps in {metrics['seconds']:.0f} s"
        f"{f'; {len(plan.skipped)} skipped' if plan.skipped else ''}"
    )
    return RoundOutcome("succeeded", message, rnd.id, name, parent.name, metrics, plan.skipped)


def _train_and_register(
    db: Engine,
    plan: RoundPlan,
    round_id: int,
    model_dir: str,
    data_dir: Path,
    config: LearnerConfig,
    on_step: Callable[[dict[str, Any], float], None] | None,
    beat: Heartbeat,
    nproc: int = 1,
) -> tuple[str, dict[str, Any]]:
    """Train, write the version folder atomically, register it (the folder goes again if registering fails)."""

    events = RoundEvents(data_dir, round_id)

    def step_hook(record: dict[str, Any], progress: float) -> None:
        rounds.record_step(db, round_id=round_id, step=record, progress=progress)
        events.step(record)
        if on_step is not None:
            on_step(record, progress)

    try:
        result = train_parallel(model_dir, plan.examples, config, nproc=nproc, on_step=step_hook,
                                parent_adapter=plan.start_adapter(config), should_stop=lambda: beat.lost)  # fmt: skip
    finally:
        events.close()
    metrics = {**result.metrics, "demonstrations": len(plan.new_ids), "replayed": len(plan.replay_ids),
               "skipped": plan.skipped}  # fmt: skip
    name = _version_name(db, round_id)
    manifest = {
        "parent": plan.parent.name,
        "base_model": model_dir,
        "round": round_id,
        "method": config.method,
        "demonstrations": plan.new_ids,
        "replay": plan.replay_ids,
        "hyperparameters": config.to_dict(),
        "lora": result.lora,
        "metrics": metrics,
    }
    path, checksum = write_version_dir(data_dir / "versions", name, save=result.save, manifest=manifest)
    try:
        rounds.succeed_round(
            db, round_id=round_id, version=name, adapter_path=str(path), checksum=checksum, metrics=metrics
        )
    except BaseException:
        remove_leftovers(data_dir / "versions", [name])
        raise
    return name, metrics
