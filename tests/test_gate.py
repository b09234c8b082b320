"""The promotion gate: the decision rules on crafted scores; the deployment's settings reach it; and one real case on
the built-in model (a candidate with large random LoRA weights forgets what the base knew and is rejected, then
marked so in the database). The gate after `apprentice learn --now` and a scheduled round: tests/test_rounds_cli.py,
tests/test_scheduler.py."""

from __future__ import annotations

import pytest

from learner.gate import GateConfig, SkillScore, decide
from learner.preference import Preference, learned_check
from storage import evals, probes


def s(score: float, n: int = 100) -> SkillScore:
    return SkillScore(score, n)


def store_scores(engine, version: str, scores: dict[str, float]) -> None:
    """Record `version`'s scores as if it had just been evaluated on the current probes (general suite included), so
    the gate takes them as fresh instead of scoring it: a test sets the bar the real candidate is measured against."""
    from learner.evaluate import EvalConfig, fingerprint, spec_from_row, sync_general_suite

    sync_general_suite(engine)
    specs: dict[str, list] = {}
    for row in probes.list_probes(engine):
        specs.setdefault(row.skill, []).append(spec_from_row(row))
    stored = {
        skill: {
            "score": score,
            "n": len(specs[skill]),
            "details": {"fingerprint": fingerprint(specs[skill], EvalConfig())},
        }
        for skill, score in scores.items()
    }
    evals.record_eval(engine, version=version, skills=stored)


LIVE = {"general": s(0.40, 300), "geo": s(0.50, 30), "tiny": s(1.0, 3)}


def test_a_better_candidate_is_promoted():
    cand = {"general": s(0.39, 300), "geo": s(0.70, 30), "tiny": s(0.0, 3)}
    decision = decide(cand, LIVE, trained_skills=["geo"])
    assert decision.promote, decision.reason
    assert decision.reason.startswith("promoted: ")
    rules = {c.skill: c.rule for c in decision.checks}
    assert rules == {"general": "margin", "geo": "trained", "tiny": "too-few-probes"}


def test_a_trained_skill_must_not_get_worse():
    decision = decide({**LIVE, "geo": s(0.4667, 30)}, LIVE, trained_skills=["geo"])
    assert not decision.promote
    assert "trained skill geo got worse (50.0% -> 46.7%)" in decision.reason


def test_another_skill_may_drop_by_the_margin_but_not_more():
    at_margin = decide({**LIVE, "general": s(0.38, 300)}, LIVE, trained_skills=["geo"])
    assert at_margin.promote, at_margin.reason
    forgot = decide({**LIVE, "general": s(0.37, 300)}, LIVE, trained_skills=["geo"])
    assert not forgot.promote
    assert "general dropped 3.0 points (40.0% -> 37.0%; margin 2)" in forgot.reason


def test_margin_and_minimum_probe_count_are_configurable():
    cand = {**LIVE, "general": s(0.30, 300), "tiny": s(0.0, 3)}
    assert decide(cand, LIVE, config=GateConfig(margin=0.15)).promote
    strict = decide({**LIVE, "tiny": s(0.0, 3)}, LIVE, config=GateConfig(min_probes=1))
    assert not strict.promote and "tiny dropped 100.0 points" in strict.reason
    lenient = decide(
        {**LIVE, "geo": s(0.45, 30)}, LIVE, trained_skills=["geo"], config=GateConfig(trained_tolerance=0.1)
    )
    assert lenient.promote


def test_a_skill_the_candidate_was_not_evaluated_on_blocks_promotion():
    cand = {"general": s(0.40, 300), "geo": s(0.60, 30)}
    decision = decide(cand, LIVE, trained_skills=["geo"])
    assert not decision.promote and "tiny was not evaluated on the candidate" in decision.reason


def test_new_skills_and_plain_dicts_are_accepted():
    cand = {"general": {"score": 0.41, "n": 300}, "new": {"score": 0.2, "n": 5}}
    decision = decide(cand, {"general": {"score": 0.4, "n": 300}}, trained_skills=["new"])
    assert decision.promote
    assert {c.skill: c.rule for c in decision.checks} == {"general": "margin", "new": "new-skill"}
    assert not decide({}, {}).promote


def test_drift_is_bounded_by_the_best_version_ever_live():
    best = {"general": ("v2", s(0.42, 300))}
    slipped = decide({**LIVE, "general": s(0.395, 300)}, LIVE, trained_skills=["geo"], best=best)
    assert not slipped.promote  # within 2 points of the live version, 2.5 below the best one
    assert "general is 2.5 points below v2, the best version ever live (42.0% -> 39.5%; margin 2)" in slipped.reason
    assert decide({**LIVE, "general": s(0.40, 300)}, LIVE, trained_skills=["geo"], best=best).promote


def test_a_round_that_learned_nothing_is_rejected():
    live = [Preference(-2.0, -1.0), Preference(-1.5, -1.0), Preference(-0.5, -1.0)]  # prefers 1 of 3 corrections
    same = learned_check(live, [Preference(-1.9, -1.0), Preference(-1.4, -1.0), Preference(-0.4, -1.0)], 0.05)
    assert not same.passed and same.describe().startswith("prefers the correction on 1 of 3 (live: 1)")
    decision = decide(LIVE, LIVE, trained_skills=["geo"], learned=same)
    assert not decision.promote
    assert "learned nothing from its round: prefers the correction on 1 of 3" in decision.reason
    better = learned_check(live, [Preference(-0.5, -1.0), Preference(-1.4, -1.0), Preference(-0.4, -1.0)], 0.05)
    assert better.passed and decide(LIVE, LIVE, trained_skills=["geo"], learned=better).promote
    # no original replies (imported corrections): the corrections' log-prob must rise by the minimum gain
    bare = [Preference(-2.0, None)]
    assert not learned_check(bare, [Preference(-1.98, None)], 0.05).passed
    assert learned_check(bare, [Preference(-1.5, None)], 0.05).passed
    # the live version already preferred every correction: the same minimum gain
    assert not learned_check([Preference(-0.5, -1.0)], [Preference(-0.5, -1.0)], 0.05).passed


def test_the_settings_choose_the_gate_rules(monkeypatch, tiny_model_dir):
    from pydantic import ValidationError

    from app.settings import get_settings

    assert get_settings().gate_config() == GateConfig(margin=0.02, min_probes=20)
    monkeypatch.setenv("APPRENTICE_GATE_MARGIN", "0.05")
    monkeypatch.setenv("APPRENTICE_GATE_MIN_PROBES", "7")
    settings = get_settings(model=tiny_model_dir)
    assert settings.gate_config() == GateConfig(margin=0.05, min_probes=7)
    for name, bad in [("APPRENTICE_GATE_MARGIN", "1.5"), ("APPRENTICE_GATE_MARGIN", "-0.01"),
                      ("APPRENTICE_GATE_MIN_PROBES", "0")]:  # fmt: skip
        monkeypatch.setenv(name, bad)
        with pytest.raises(ValidationError, match=name.removeprefix("APPRENTICE_").lower()):
            get_settings()
        monkeypatch.delenv(name)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"])  # the model is the point: one backend
def test_a_perturbed_adapter_is_rejected_on_the_builtin_model(engine, builtin_dir, tmp_path):
    from learner.evaluate import EvalConfig
    from learner.gate import gate_candidate
    from storage.probes import add_probes
    from storage.versions import get_version
    from tests.test_evaluate import add_version, random_adapter

    questions = [
        ("What is the capital of France?", "Paris"),
        ("What is the capital of Italy?", "Rome"),
        ("What is the capital of Japan?", "Tokyo"),
        ("What is the capital of Germany?", "Berlin"),
        ("What color is the sky on a clear day?", "blue"),
        ("How many days are in a week?", r"\b(7|seven)\b"),
    ]
    items = [
        {"skill": "basics", "messages": [{"role": "user", "content": q}], "answer": a,
         "grader": "regex" if "\\" in a else "contains"}
        for q, a in questions
    ]  # fmt: skip
    add_probes(engine, items=items)
    add_version(engine, "v1", random_adapter(builtin_dir, tmp_path / "v1", scale=0.2))
    config = EvalConfig(batch_size=6, max_new_tokens=24, general_suite=None)
    decision = gate_candidate(
        engine, builtin_dir, candidate="v1", trained_skills=[], config=GateConfig(min_probes=5), eval_config=config
    )
    live, cand = decision.checks[0].live, decision.checks[0].candidate
    assert live.score >= 4 / 6, f"the base model should know these ({live})"
    assert cand.score <= 1 / 6, f"random LoRA weights should wreck the answers ({cand})"
    assert not decision.promote and "basics dropped" in decision.reason
    rejected = get_version(engine, name="v1")
    assert rejected.status == "rejected" and rejected.reason == decision.reason
