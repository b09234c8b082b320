"""Admin actions that need the serving engine or more than one storage call, shared by the admin tabs and the admin
REST API: the teacher check of a demonstration, old-vs-new answers of a version, activating (promote / roll back) a
version, and the review actions' bulk form.

The teacher check asks the live version, greedily, for an answer to the demonstration's question twice: as asked
(what the student sees) and with the demonstration in the SDFT teacher prompt (learner/prompts.py, the deployment's
teacher template). `agreement` scores each answer against the correction (content-word F1; 1.0 when the answer
contains the correction); the queue flags a demonstration whose teacher answer still disagrees: the model cannot
read the answer off its context, so SDFT has little to distil from it.

    .venv/bin/python -m pytest -q tests/test_admin_api.py
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter
from collections.abc import Collection
from typing import Any

from app.engines.base import Sampling
from app.services.queries import question_of, read_demo
from app.state import AppState
from learner.adapters import check_version_adapter
from learner.gate import trained_skills
from learner.prompts import teacher_messages
from storage import evals, rounds, teacher_checks, versions
from storage.demonstrations import get_demonstrations
from storage.errors import ApprenticeError
from storage.probes import list_probes

STOPWORDS = frozenset(
    "a an the is are was were be been of to in on at for and or it its this that with as by from so do does did i you "
    "he she we they my your his her our their me him them".split()
)
CHECK_MIN_TOKENS, CHECK_MAX_TOKENS = 32, 256
COMPARE_MAX_TOKENS = 64


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"\w+", text.casefold()) if w not in STOPWORDS]


def agreement(answer: str, correction: str) -> float:
    """How far `answer` says what `correction` says, 0..1: 1.0 when it contains the correction (case and spacing
    aside), else the F1 of their content words (stop words left out)."""
    squash = lambda t: " ".join(t.casefold().split())  # noqa: E731
    if squash(correction) and squash(correction) in squash(answer):
        return 1.0
    a, c = Counter(_words(answer)), Counter(_words(correction))
    common = sum((a & c).values())
    if not common:
        return 0.0
    precision, recall = common / sum(a.values()), common / sum(c.values())
    return 2 * precision * recall / (precision + recall)


async def collect(state: AppState, messages: list[dict[str, str]], max_tokens: int, version: str | None) -> str:
    """The engine's whole greedy reply (temperature 0) to `messages`."""
    text = ""
    async for delta in state.engine.chat(messages, Sampling(temperature=0.0, max_tokens=max_tokens), version=version):
        text += delta.text
    return text.strip()


def teacher_template(state: AppState) -> str:
    return state.settings.learner_config().teacher_template


async def teacher_check(state: AppState, demo_id: int) -> dict[str, Any]:
    """Run and store the teacher check of one demonstration with the live version; returns the demonstration."""
    demo = await asyncio.to_thread(read_demo, state.db, demo_id)
    version = state.engine.active
    budget = max(CHECK_MIN_TOKENS, min(CHECK_MAX_TOKENS, len(demo["corrected_answer"]) // 2 + CHECK_MIN_TOKENS))
    budget = min(budget, state.settings.max_new_tokens)
    teacher_prompt = teacher_messages(demo["messages"], demo["corrected_answer"], teacher_template(state))
    # both prompts go through the engine's chat template alike, so the (default) system prompt is the same in each
    student = await collect(state, demo["messages"], budget, version)
    teacher = await collect(state, teacher_prompt, budget, version)
    await asyncio.to_thread(
        teacher_checks.record_check,
        state.db,
        demo_id=demo_id,
        version=version,
        correction=demo["corrected_answer"],
        student_answer=student,
        teacher_answer=teacher,
        student_agreement=agreement(student, demo["corrected_answer"]),
        teacher_agreement=agreement(teacher, demo["corrected_answer"]),
    )
    return await asyncio.to_thread(read_demo, state.db, demo_id)


def _stored_probe_pairs(db: Any, old: str, new: str) -> list[dict[str, Any]]:
    """Per-probe replies of both versions from their latest stored evaluations, for skills both were scored on."""
    pairs = []
    both = set(evals.latest_scores(db, version=old)) & set(evals.latest_scores(db, version=new))
    for skill in sorted(both):
        before = {p["probe_id"]: p for p in evals.latest_details(db, version=old, skill=skill).get("probes", [])}
        for p in evals.latest_details(db, version=new, skill=skill).get("probes", []):
            o = before.get(p["probe_id"])
            if o is None:
                continue
            pairs.append(
                {
                    "kind": "probe",
                    "skill": skill,
                    "question": "",
                    "probe_id": p["probe_id"],
                    "reference": p["answer"],
                    "old": o["reply"],
                    "new": p["reply"],
                    "old_correct": o["correct"],
                    "new_correct": p["correct"],
                }
            )
    return pairs


def _sample(items: list[dict[str, Any]], k: int, seed: int, prefer: Collection[str] = ()) -> list[dict[str, Any]]:
    """Up to k items: those of the `prefer` skills (the ones the version was trained on) first, then the others;
    within each, changed outcomes first (the informative ones), the rest drawn at random (seeded)."""
    rng, picked = random.Random(seed), []
    for trained in (True, False):
        group = [x for x in items if (x.get("skill") in prefer) == trained]
        for changed in (True, False):
            tier = [x for x in group if (x.get("old_correct") != x.get("new_correct")) == changed]
            picked += rng.sample(tier, min(k - len(picked), len(tier)))
    return picked


def _compare_inputs(db: Any, name: str, sample: int, seed: int) -> tuple[Any, Any, list[dict[str, Any]], list[Any]]:
    """(new version, its parent, sampled probe pairs with their questions, sampled learned demonstrations with the
    corrected answer each was learned with)."""

    new = versions.get_version(db, name=name)
    if new.parent is None:
        raise ApprenticeError(f"{name} is the base model: it has no parent to compare with")
    old = versions.get_version(db, name=new.parent)

    probe_pairs = _sample(_stored_probe_pairs(db, old.name, new.name), sample, seed, prefer=trained_skills(db, name))
    questions = {p.id: question_of(p.messages) for p in list_probes(db)}
    for p in probe_pairs:
        p["question"] = questions.get(p["probe_id"], "")
    learned = rounds.round_demonstrations(db, round_id=new.round_id) if new.round_id is not None else []
    answers = {x.demonstration_id: x.answer for x in learned if not x.replay}
    demos = get_demonstrations(db, ids=random.Random(seed).sample(sorted(answers), min(sample, len(answers))))
    return new, old, probe_pairs, [(d, answers[d.id]) for d in demos]


async def compare(state: AppState, name: str, *, sample: int = 5, seed: int = 0) -> dict[str, Any]:
    """Old (the parent) vs new (`name`) answers: on a sample of probes (those of the skills `name` was trained on
    first), from both versions' stored evaluations, and on a sample of the demonstrations `name`'s round learned,
    generated now (greedy, at most COMPARE_MAX_TOKENS tokens: enough to see the difference) by both versions."""
    new, old, probe_pairs, demos = await asyncio.to_thread(_compare_inputs, state.db, name, sample, seed)
    demo_pairs = []
    if demos:
        loaded = await _ensure_loaded(state, [old, new])
        try:
            budget = min(state.settings.max_new_tokens, COMPARE_MAX_TOKENS)
            for d, answer in demos:
                before = await collect(state, d.messages, budget, old.name)
                after = await collect(state, d.messages, budget, new.name)
                demo_pairs.append(
                    {
                        "kind": "demonstration",
                        "id": d.id,
                        "skill": d.skill,
                        "question": question_of(d.messages),
                        "reference": answer,  # the correction as the round trained on it
                        "old": before,
                        "new": after,
                        "old_agreement": round(agreement(before, answer), 3),
                        "new_agreement": round(agreement(after, answer), 3),
                    }
                )
        finally:
            for v in loaded:
                if v != state.engine.active:
                    await state.engine.unload(v)
    return {"version": new.name, "parent": old.name, "probes": probe_pairs, "demonstrations": demo_pairs}


async def _ensure_loaded(state: AppState, wanted: list[Any]) -> list[str]:
    """Load the versions the engine does not hold yet; returns the names it loaded (to unload afterwards)."""
    loaded = []
    for v in wanted:
        if v.name not in state.engine.loaded():
            await asyncio.to_thread(check_version_adapter, v.name, v.adapter_path, v.checksum)
            await state.engine.load(v.name, v.adapter_path)
            loaded.append(v.name)
    return loaded
