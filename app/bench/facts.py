"""The learning benchmark's fact set: loading and checking a fact file, the fixed tune/report split, the probes that
measure a version on the facts, and the scores (direct/indirect accuracy by generation and by multiple choice,
leakage of made-up names into the general suite's answers).

Fact file format, one JSON object per line (`app/bench/data/facts.jsonl` is the shipped set):
    {"id", "skill", "demonstration": {"messages": [...], "answer": "..."},
     "direct": [{"question", "answer", "choices"}], "indirect": [{"question", "answer", "choices"}]}

Split (fixed by id, so every run and every method sees the same one): inside each skill the facts are sorted by id
and every 4th one (positions 0, 4, 8, ...) is a *tune* fact; the rest are *report* facts. Hyper-parameters (the
frontier's headline point) are chosen on tune facts; headline accuracies are measured on report facts.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learner.probes import ProbeSpec
from learner.prompts import Example, teacher_messages
from storage.demonstrations import validate_messages
from storage.errors import ApprenticeError

FACTS = Path(__file__).parent / "data" / "facts.jsonl"
FACT_NAMES = Path(__file__).parent / "data" / "facts_names.txt"
KINDS = ("direct", "indirect")
TUNE_EVERY = 4


@dataclass(frozen=True)
class Question:
    question: str
    answer: str
    choices: list[str]


@dataclass(frozen=True)
class Fact:
    id: str
    skill: str
    messages: list[dict[str, str]]
    answer: str
    direct: list[Question]
    indirect: list[Question]

    def example(self) -> Example:
        return Example(messages=self.messages, answer=self.answer)


def _question(obj: Any, where: str) -> Question:
    if not isinstance(obj, dict) or not all(
        isinstance(obj.get(k), str) and obj[k].strip() for k in ("question", "answer")
    ):
        raise ApprenticeError(f"{where}: needs 'question' and 'answer' strings")
    choices = obj.get("choices")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):
        raise ApprenticeError(f"{where}: 'choices' must be a list of at least two non-empty strings")
    if obj["answer"] not in choices or len(set(choices)) != len(choices):
        raise ApprenticeError(f"{where}: 'choices' must be distinct and contain the answer {obj['answer']!r}")
    return Question(obj["question"], obj["answer"], list(choices))


def parse_fact(obj: Any, where: str) -> Fact:
    """One fact from its JSON form; raises ApprenticeError naming `where` and what is wrong."""
    if not isinstance(obj, dict):
        raise ApprenticeError(f"{where}: a fact must be a JSON object")
    missing = [k for k in ("id", "skill", "demonstration", *KINDS) if k not in obj]
    if missing:
        raise ApprenticeError(f"{where}: missing {', '.join(missing)}")
    demo = obj["demonstration"]
    if not isinstance(demo, dict) or not isinstance(demo.get("answer"), str) or not demo["answer"].strip():
        raise ApprenticeError(f"{where}: 'demonstration' needs 'messages' and a non-empty 'answer'")
    try:
        messages = validate_messages(demo.get("messages"))
    except ApprenticeError as e:
        raise ApprenticeError(f"{where}: demonstration messages: {e}") from None
    parts = {}
    for kind in KINDS:
        if not isinstance(obj[kind], list) or not obj[kind]:
            raise ApprenticeError(f"{where}: '{kind}' must be a non-empty list")
        parts[kind] = [_question(q, f"{where} {kind}[{i}]") for i, q in enumerate(obj[kind])]
    fid, skill = str(obj["id"]).strip(), str(obj["skill"]).strip()
    if not fid or not skill or "|" in fid:
        raise ApprenticeError(f"{where}: 'id' and 'skill' must be non-empty ('|' is not allowed in an id)")
    return Fact(fid, skill, messages, demo["answer"], parts["direct"], parts["indirect"])


def load_facts(path: Path = FACTS) -> list[Fact]:
    """Every fact of a JSONL file, in file order; ids must be unique."""
    if not Path(path).exists():
        raise ApprenticeError(f"fact file {path} does not exist")
    facts, seen = [], set()
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ApprenticeError(f"{Path(path).name} line {number}: not JSON ({e.msg})") from None
        fact = parse_fact(obj, f"{Path(path).name} line {number}")
        if fact.id in seen:
            raise ApprenticeError(f"{Path(path).name} line {number}: duplicate id {fact.id!r}")
        seen.add(fact.id)
        facts.append(fact)
    if not facts:
        raise ApprenticeError(f"fact file {path} holds no facts")
    return facts


def skills_in_order(facts: list[Fact]) -> list[str]:
    return list(dict.fromkeys(f.skill for f in facts))


def split(facts: list[Fact]) -> dict[str, str]:
    """fact id -> "tune" | "report" (every TUNE_EVERY-th fact of each skill, sorted by id, is a tune fact)."""
    by_skill: dict[str, list[str]] = defaultdict(list)
    for f in facts:
        by_skill[f.skill].append(f.id)
    out = {}
    for ids in by_skill.values():
        for i, fid in enumerate(sorted(ids)):
            out[fid] = "tune" if i % TUNE_EVERY == 0 else "report"
    return out


def quick_subset(facts: list[Fact], per_skill: int) -> list[Fact]:
    """The first `per_skill` report facts of each skill (file order): what `--quick` trains and scores on."""
    roles, counts, out = split(facts), defaultdict(int), []
    for f in facts:
        if roles[f.id] == "report" and counts[f.skill] < per_skill:
            counts[f.skill] += 1
            out.append(f)
    return out


def load_names(names_path: Path | None, facts: list[Fact]) -> list[str]:
    """Made-up names for the leakage count: the names file, else every non-numeric answer and choice of the facts."""
    if names_path is not None:
        names = [n.strip() for n in Path(names_path).read_text(encoding="utf-8").splitlines()]
    else:
        names = [c for f in facts for q in f.direct + f.indirect for c in q.choices]
    return sorted({n for n in names if n and not n.isdigit()})


def fact_probes(facts: list[Fact], teacher_template: str | None = None) -> list[ProbeSpec]:
    """Per question: a generated probe (greedy; the keyword appears) and a multiple-choice probe (log-likelihood).
    external_id = "fact id|kind|index|mode" so scores can be grouped back. With `teacher_template` the question is
    asked the way the SDFT teacher is prompted: with the fact's demonstration in context."""
    specs = []
    for f in facts:
        for kind in KINDS:
            for i, q in enumerate(getattr(f, kind)):
                messages = [{"role": "user", "content": q.question}]
                if teacher_template is not None:
                    messages = teacher_messages(messages, f.answer, teacher_template)
                base = f"{f.id}|{kind}|{i}"
                specs.append(ProbeSpec("fact", messages, q.answer, "contains", external_id=f"{base}|gen"))
                specs.append(ProbeSpec("fact", messages, q.answer, "choice", list(q.choices), external_id=f"{base}|mc"))
    return specs


def fact_scores(results: list[Any], facts: list[Fact], roles: dict[str, str]) -> dict[str, Any]:
    """Accuracies {group: {"direct", "indirect", "direct_mc", "indirect_mc", "n"}} for groups all / tune / report /
    skill:<name>, each the mean over facts of the fraction of that fact's questions answered right."""
    per_fact: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for r in results:
        fid, kind, _, mode = r.external_id.split("|")
        per_fact[(fid, kind + ("_mc" if mode == "mc" else ""))].append(bool(r.correct))
    skill_of = {f.id: f.skill for f in facts}
    groups: dict[str, list[str]] = defaultdict(list)
    for f in facts:
        for g in ("all", roles.get(f.id, "report"), f"skill:{f.skill}"):
            groups[g].append(f.id)
    out = {}
    for g, ids in groups.items():
        row: dict[str, Any] = {"n": len(ids)}
        for key in ("direct", "indirect", "direct_mc", "indirect_mc"):
            vals = [sum(v) / len(v) for fid in ids if (v := per_fact.get((fid, key)))]
            row[key] = sum(vals) / len(vals) if vals else None
        out[g] = row
    assert set(skill_of) >= {fid for fid, _ in per_fact}
    return out


def leaked(replies: list[str], names: list[str]) -> list[str]:
    """The replies that contain a made-up name as a whole word (case-insensitive)."""
    if not names:
        return []
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(names, key=len, reverse=True))) + r")\b", re.I)
    return [r for r in replies if pattern.search(r)]
