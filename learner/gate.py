"""The promotion gate: may a candidate version replace the live one?

`decide` is a pure function of per-skill scores (0..1 with probe counts): a candidate passes when
  1. every skill it was trained on scored at least as well as under the live version (less `trained_tolerance`),
  2. no other skill dropped by more than `margin` (default 0.02 = 2 points), a rule that applies only to skills with
     at least `min_probes` probes in both evaluations (smaller ones are too noisy to block a round; they are listed),
  3. it was evaluated on every skill the live version was evaluated on.

`gate_candidate` wires it to the database: it evaluates the candidate (and the live version again when its stored
scores are stale, i.e. the probes changed since), decides, and records the verdict. `gate_round` is the whole gate
after a round for a process that does not serve (`apprentice learn`, the learning daemon): the round's trained skills,
`gate_candidate`, and a promoted candidate made the active version in the database, which every running server
follows (app/activation.py). The server gates its own rounds (app/ui/admin_jobs.gate_and_activate) so that it can
hot-swap at once.

    decision = gate_round(engine, model_folder, "v4", config=GateConfig(margin=0.02, min_probes=20))
    print(verdict("v4", decision))     # gate: v4 is live (promoted: geo 40.0->60.0, general 47.5->47.2)

    .venv/bin/python -m pytest -q tests/test_gate.py
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from learner.adapters import verify_adapter
from learner.evaluate import EvalConfig, evaluate_version, fingerprint, spec_from_row, sync_general_suite
from storage import demonstrations, evals, probes, rounds, versions


@dataclass(frozen=True)
class GateConfig:
    margin: float = field(
        default=0.02, metadata={"help": "Largest drop allowed on a skill not trained on (0.02 = 2 points)."}
    )
    min_probes: int = field(
        default=20, metadata={"help": "The margin rule applies to skills with at least this many probes."}
    )
    trained_tolerance: float = field(
        default=0.0, metadata={"help": "Drop allowed on a trained skill (0: must not get worse)."}
    )


@dataclass(frozen=True)
class SkillScore:
    score: float  # fraction correct, 0..1
    n: int  # probes scored


@dataclass(frozen=True)
class SkillCheck:
    skill: str
    live: SkillScore | None
    candidate: SkillScore | None
    rule: str  # trained | margin | too-few-probes | new-skill | not-evaluated
    passed: bool

    def describe(self) -> str:
        def pct(s: SkillScore | None) -> str:
            return "-" if s is None else f"{100 * s.score:.1f}% (n={s.n})"

        return (
            f"{self.skill}: {pct(self.live)} -> {pct(self.candidate)} [{self.rule}{'' if self.passed else ', FAILED'}]"
        )


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    checks: list[SkillCheck]


def _as_score(value: SkillScore | Mapping[str, Any] | Any) -> SkillScore:
    if isinstance(value, SkillScore):
        return value
    if isinstance(value, Mapping):
        return SkillScore(float(value["score"]), int(value["n"]))
    return SkillScore(float(value.score), int(value.n))


def _check(
    skill: str, live: SkillScore | None, cand: SkillScore | None, trained: bool, config: GateConfig
) -> SkillCheck:
    if cand is None:
        return SkillCheck(skill, live, cand, "not-evaluated", passed=False)
    if live is None:
        return SkillCheck(skill, live, cand, "new-skill", passed=True)
    drop = live.score - cand.score
    if trained:
        return SkillCheck(skill, live, cand, "trained", passed=drop <= config.trained_tolerance + 1e-9)
    if min(live.n, cand.n) < config.min_probes:
        return SkillCheck(skill, live, cand, "too-few-probes", passed=True)
    return SkillCheck(skill, live, cand, "margin", passed=drop <= config.margin + 1e-9)


def decide(
    candidate: Mapping[str, Any],
    live: Mapping[str, Any],
    *,
    trained_skills: Iterable[str] = (),
    config: GateConfig = GateConfig(),
) -> GateDecision:
    """Promote or reject, with a one-line reason and every per-skill check. Scores map skill -> SkillScore or
    {"score", "n"} (as `apprentice eval --json` writes them, or storage.evals.latest_scores returns them)."""
    cand = {k: _as_score(v) for k, v in candidate.items()}
    base = {k: _as_score(v) for k, v in live.items()}
    trained = set(trained_skills)
    checks = [
        _check(skill, base.get(skill), cand.get(skill), skill in trained, config)
        for skill in sorted(set(cand) | set(base) | (trained & set(cand)))
    ]
    failed = [c for c in checks if not c.passed]
    if failed:
        return GateDecision(False, "rejected: " + "; ".join(_why(c, config) for c in failed), checks)
    if not checks:
        return GateDecision(False, "rejected: no evaluation results to compare", checks)
    kept = ", ".join(
        f"{c.skill} {100 * c.live.score:.1f}->{100 * c.candidate.score:.1f}" for c in checks if c.live and c.candidate
    )
    return GateDecision(True, f"promoted: {kept or 'new skills only'}", checks)


def _why(check: SkillCheck, config: GateConfig) -> str:
    if check.rule == "not-evaluated":
        return f"{check.skill} was not evaluated on the candidate"
    assert check.live is not None and check.candidate is not None, "only comparisons can fail"
    live, cand = 100 * check.live.score, 100 * check.candidate.score
    if check.rule == "trained":
        return f"trained skill {check.skill} got worse ({live:.1f}% -> {cand:.1f}%)"
    return (
        f"{check.skill} dropped {live - cand:.1f} points ({live:.1f}% -> {cand:.1f}%; margin {100 * config.margin:g})"
    )


def fresh_scores(engine: Engine, model_folder: str, version: str, eval_config: EvalConfig) -> dict[str, SkillScore]:
    """`version`'s scores on the current probes: stored ones where their probe set is unchanged, the rest scored
    now (and stored)."""
    if eval_config.general_suite is not None:
        sync_general_suite(engine, eval_config.general_suite)
    by_skill: dict[str, list] = {}
    for row in probes.list_probes(engine):
        by_skill.setdefault(row.skill, []).append(spec_from_row(row))
    current = {skill: fingerprint(specs, eval_config) for skill, specs in by_skill.items()}
    stored = evals.latest_scores(engine, version=version)
    stale = sorted(s for s in current if s not in stored or stored[s].fingerprint != current[s])
    if stale:
        evaluate_version(engine, model_folder, version, skills=stale, config=eval_config)
        stored = evals.latest_scores(engine, version=version)
    return {s: SkillScore(stored[s].score, stored[s].n) for s in current}


def gate_candidate(
    engine: Engine,
    model_folder: str,
    *,
    candidate: str,
    trained_skills: Iterable[str],
    live: str | None = None,
    config: GateConfig = GateConfig(),
    eval_config: EvalConfig = EvalConfig(),
) -> GateDecision:
    """Evaluate `candidate` and the live version on every skill, decide, record the verdict (a rejected candidate
    gets status 'rejected' and the reason). Returns the decision; the caller activates a promoted candidate."""
    live = live or versions.active_version(engine).name
    live_scores = fresh_scores(engine, model_folder, live, eval_config)
    cand_scores = fresh_scores(engine, model_folder, candidate, eval_config)
    decision = decide(cand_scores, live_scores, trained_skills=trained_skills, config=config)
    evals.record_gate(engine, candidate=candidate, promote=decision.promote, reason=decision.reason)
    return decision


def trained_skills(engine: Engine, candidate: str) -> list[str]:
    """The skills of the demonstrations `candidate`'s round learned (none for a version no round made)."""
    version = versions.get_version(engine, name=candidate)
    learned = rounds.round_demonstrations(engine, round_id=version.round_id) if version.round_id else []
    demos = demonstrations.get_demonstrations(engine, ids=[x.demonstration_id for x in learned])
    return sorted({d.skill for d in demos if d.skill})


def gate_round(
    engine: Engine,
    model_folder: str,
    candidate: str,
    *,
    config: GateConfig = GateConfig(),
    eval_config: EvalConfig = EvalConfig(),
) -> GateDecision:
    """Gate the version a round wrote, on the skills that round trained, and make it the active version in the
    database when it passes (servers follow within their version_poll_seconds). If the live version changed while
    the gate evaluated, the candidate was compared with the wrong version: it stays a candidate."""
    live = versions.active_version(engine).name
    skills = trained_skills(engine, candidate)
    decision = gate_candidate(
        engine,
        model_folder,
        candidate=candidate,
        trained_skills=skills,
        live=live,
        config=config,
        eval_config=eval_config,
    )
    if not decision.promote:
        return decision
    now = versions.active_version(engine).name
    if now != live:
        why = f"not promoted: the live version changed from {live} to {now} while the gate ran; judged against {live}"
        return GateDecision(False, why, decision.checks)
    target = versions.get_version(engine, name=candidate)
    if target.adapter_path and target.checksum:
        verify_adapter(target.adapter_path, target.checksum)  # never make a damaged adapter live
    versions.set_active(engine, name=candidate)
    return decision


def verdict(candidate: str, decision: GateDecision) -> str:
    """The gate's outcome in one line, for logs and the command line."""
    if decision.promote:
        return f"gate: {candidate} is live ({decision.reason})"
    return f"gate: {candidate} is not live ({decision.reason}); `apprentice activate {candidate}` overrides the gate"
