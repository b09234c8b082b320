"""The promotion gate: may a candidate version replace the live one?

`decide` is a pure function of per-skill scores (0..1 with probe counts): a candidate passes when
  1. every skill it was trained on scored at least as well as under the live version (less `trained_tolerance`),
  2. no other skill dropped by more than `margin` (default 0.02 = 2 points) below the live version, nor below the
     best score of any version that was ever live (so drift cannot add up over rounds); a rule that applies only to
     skills with at least `min_probes` probes in both evaluations (smaller ones are too noisy to block a round),
  3. it was evaluated on every skill the live version was evaluated on,
  4. it learned its round: on the round's own demonstrations it prefers the corrected answer over the original reply
     more often than the live version does (learner.preference; a round that learned nothing is rejected).

`gate_candidate` wires it to the database: it evaluates the candidate (and the live version again when its stored
scores are stale, i.e. the probes changed since), decides, and records the verdict. The app runs it after
every round through app/services/learning.finish_round (the verdict recorded, then a promoted candidate made live
by the one activation rule, then a server's hot swap). `gate_round` is the same for a script (the lifelong
benchmark): the round's trained skills, `gate_candidate`, and a promoted candidate made the active version.

    decision = gate_round(db, model_folder, "v4", config=GateConfig(margin=0.02, min_probes=20))
    print(verdict("v4", decision))     # gate: v4 is live (promoted: geo 40.0->60.0, general 47.5->47.2)

    .venv/bin/python -m pytest -q tests/test_gate.py
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from learner.adapters import check_version_adapter
from learner.evaluate import EvalConfig, evaluate_version, fingerprint, spec_from_row, sync_general_suite
from learner.preference import LearnedCheck, round_learned
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
    learned_min_gain: float = field(
        default=0.05,
        metadata={
            "help": "When the live version already preferred every correction (or none has an original reply): the "
            "rise in the corrections' mean log-prob per token (nats) that counts as learning."
        },
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
    best: Mapping[str, tuple[str, Any]] | None = None,
    learned: LearnedCheck | None = None,
) -> GateDecision:
    """Promote or reject, with a one-line reason and every per-skill check. Scores map skill -> SkillScore or
    {"score", "n"} (as `apprentice eval --json` writes them, or storage.evals.latest_scores returns them). `best`
    maps a skill to (version, score) of the best version ever live on it; `learned` is the round's learning check."""
    cand = {k: _as_score(v) for k, v in candidate.items()}
    base = {k: _as_score(v) for k, v in live.items()}
    trained = set(trained_skills)
    checks = [
        _check(skill, base.get(skill), cand.get(skill), skill in trained, config)
        for skill in sorted(set(cand) | set(base) | (trained & set(cand)))
    ]
    failed = [_why(c, config) for c in checks if not c.passed]
    for c in checks:
        if c.passed and c.rule == "margin" and c.candidate is not None and (best or {}).get(c.skill):
            name, top = best[c.skill][0], _as_score(best[c.skill][1])
            if top.score - c.candidate.score > config.margin + 1e-9:
                top_pct, cand_pct = 100 * top.score, 100 * c.candidate.score
                failed.append(
                    f"{c.skill} is {top_pct - cand_pct:.1f} points below {name}, the best version ever live "
                    f"({top_pct:.1f}% -> {cand_pct:.1f}%; margin {100 * config.margin:g})"
                )
    if learned is not None and not learned.passed:
        failed.append(f"learned nothing from its round: {learned.describe()}")
    if failed:
        return GateDecision(False, "rejected: " + "; ".join(failed), checks)
    if not checks:
        return GateDecision(False, "rejected: no evaluation results to compare", checks)
    kept = ", ".join(
        f"{c.skill} {100 * c.live.score:.1f}->{100 * c.candidate.score:.1f}" for c in checks if c.live and c.candidate
    )
    taught = f"; {learned.describe()}" if learned is not None else ""
    return GateDecision(True, f"promoted: {kept or 'new skills only'}{taught}", checks)


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


def current_fingerprints(db: Engine, eval_config: EvalConfig) -> dict[str, str]:
    """skill -> fingerprint of its probes as they are now (a stored score with another one is stale)."""
    by_skill: dict[str, list] = {}
    for row in probes.list_probes(db):
        by_skill.setdefault(row.skill, []).append(spec_from_row(row))
    return {skill: fingerprint(specs, eval_config) for skill, specs in by_skill.items()}


def fresh_scores(db: Engine, model_folder: str, version: str, eval_config: EvalConfig) -> dict[str, SkillScore]:
    """`version`'s scores on the current probes: stored ones where their probe set is unchanged, the rest scored
    now (and stored)."""
    if eval_config.general_suite is not None:
        sync_general_suite(db, eval_config.general_suite)
    current = current_fingerprints(db, eval_config)
    stored = evals.latest_scores(db, version=version)
    stale = sorted(s for s in current if s not in stored or stored[s].fingerprint != current[s])
    if stale:
        evaluate_version(db, model_folder, version, skills=stale, config=eval_config)
        stored = evals.latest_scores(db, version=version)
    return {s: SkillScore(stored[s].score, stored[s].n) for s in current}


def gate_candidate(
    db: Engine,
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
    live = live or versions.active_version(db).name
    live_scores = fresh_scores(db, model_folder, live, eval_config)
    cand_scores = fresh_scores(db, model_folder, candidate, eval_config)
    learned = learned_check(db, model_folder, candidate=candidate, live=live, config=config)
    best = best_live_scores(db, eval_config, exclude=candidate)
    decision = decide(
        cand_scores, live_scores, trained_skills=trained_skills, config=config, best=best, learned=learned
    )
    evals.record_gate(db, candidate=candidate, promote=decision.promote, reason=decision.reason)
    return decision


def best_live_scores(db: Engine, eval_config: EvalConfig, *, exclude: str) -> dict[str, tuple[str, SkillScore]]:
    """skill -> (version, score) of the best stored score, on today's probes, of every version that was ever live."""
    current = current_fingerprints(db, eval_config)
    best: dict[str, tuple[str, SkillScore]] = {}
    for v in versions.list_versions(db):
        if v.activated is None or v.name == exclude:
            continue
        for skill, stored in evals.latest_scores(db, version=v.name).items():
            if current.get(skill) == stored.fingerprint and (skill not in best or stored.score > best[skill][1].score):
                best[skill] = (v.name, SkillScore(stored.score, stored.n))
    return best


def learned_check(
    db: Engine, model_folder: str, *, candidate: str, live: str, config: GateConfig
) -> LearnedCheck | None:
    """The candidate against the live version on its round's demonstrations (None for a version no round made)."""
    cand = versions.get_version(db, name=candidate)
    if cand.round_id is None:
        return None
    return round_learned(
        db,
        model_folder,
        round_id=cand.round_id,
        live_adapter=versions.get_version(db, name=live).adapter_path,
        candidate_adapter=cand.adapter_path,
        min_gain=config.learned_min_gain,
    )


def trained_skills(db: Engine, candidate: str) -> list[str]:
    """The skills of the demonstrations `candidate`'s round learned (none for a version no round made)."""
    version = versions.get_version(db, name=candidate)
    learned = rounds.round_demonstrations(db, round_id=version.round_id) if version.round_id else []
    demos = demonstrations.get_demonstrations(db, ids=[x.demonstration_id for x in learned])
    return sorted({d.skill for d in demos if d.skill})


def gate_round(
    db: Engine,
    model_folder: str,
    candidate: str,
    *,
    config: GateConfig = GateConfig(),
    eval_config: EvalConfig = EvalConfig(),
) -> GateDecision:
    """Gate the version a round wrote, on the skills that round trained, and make it the active version in the
    database when it passes (servers follow within their version_poll_seconds). If the live version changed while
    the gate evaluated, the candidate was compared with the wrong version: it stays a candidate."""
    live = versions.active_version(db).name
    skills = trained_skills(db, candidate)
    decision = gate_candidate(
        db,
        model_folder,
        candidate=candidate,
        trained_skills=skills,
        live=live,
        config=config,
        eval_config=eval_config,
    )
    if not decision.promote:
        return decision
    now = versions.active_version(db).name
    if now != live:
        why = f"not promoted: the live version changed from {live} to {now} while the gate ran; judged against {live}"
        return GateDecision(False, why, decision.checks)
    target = versions.get_version(db, name=candidate)
    check_version_adapter(candidate, target.adapter_path, target.checksum)  # never make a damaged adapter live
    versions.set_active(db, name=candidate)
    return decision


def verdict(candidate: str, decision: GateDecision) -> str:
    """The gate's outcome in one line, for logs and the command line."""
    if decision.promote:
        return f"gate: {candidate} is live ({decision.reason})"
    return f"gate: {candidate} is not live ({decision.reason}); `apprentice activate {candidate}` overrides the gate"
