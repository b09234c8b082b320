"""Skills, probes and graders: what a probe is, how a reply is graded, and the built-in general suite.

A skill is a named set of probes. A probe is a conversation (ending with the user turn), a reference answer and a
grader, one small class per grader (the shape of nanochat's `Task`s):

    exact     the whole reply equals the answer (case, surrounding whitespace, quotes and final punctuation ignored)
    contains  the answer appears in the reply (case-insensitive, whitespace runs collapsed)
    regex     `re.search(answer, reply)` with IGNORECASE and DOTALL (write `(?-i:...)` for a case-sensitive part)
    choice    the choice with the highest log-likelihood as the start of the assistant reply is the answer (lm-eval's
              convention; no text is generated, so it is deterministic and free of parsing). Requiring the end of
              turn after the choice scored worse on the built-in model (49% vs 61% on the suite's choice items):
              a chatty model rarely ends its turn after one word. So no choice may be the beginning of another.

`parse_probe` validates one probe from an import file (invalid regex, a choice answer not among the choices, ...)
and raises `ApprenticeError` with a clear message. Scoring a model lives in learner/evaluate.py.

    .venv/bin/python -m pytest -q tests/test_probes.py
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from storage.demonstrations import validate_messages
from storage.errors import ApprenticeError

GENERAL_SUITE = Path(__file__).parent / "data" / "general_suite.jsonl"
GENERAL_SKILL = "general"
REGEX_FLAGS = re.IGNORECASE | re.DOTALL
NAME_CHARS = set(string.ascii_letters + string.digits + "-_.:/ ")


class ProbeError(ApprenticeError):
    """A probe that cannot be graded as written."""


@dataclass(frozen=True)
class ProbeSpec:
    """A probe as data, before or after it is stored (`probe_id` is the database id once stored)."""

    skill: str
    messages: list[dict[str, str]]
    answer: str
    grader: str
    choices: list[str] | None = None
    category: str = ""
    external_id: str | None = None
    probe_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


class Grader:
    """Grades a reply against a probe's answer. `generates` is False for graders that score likelihoods instead."""

    name: ClassVar[str]
    generates: ClassVar[bool] = True

    def validate(self, answer: str, choices: list[str] | None) -> None:
        if choices is not None:
            raise ProbeError(f"grader {self.name!r} takes no choices (only 'choice' does)")

    def grade(self, reply: str, answer: str) -> bool:
        raise NotImplementedError


def _squash(text: str) -> str:
    return " ".join(text.split()).casefold()


class Exact(Grader):
    name = "exact"
    STRIP = " \t\n\"'`.,;:!?*"

    def grade(self, reply: str, answer: str) -> bool:
        return _squash(reply).strip(self.STRIP) == _squash(answer).strip(self.STRIP)


class Contains(Grader):
    name = "contains"

    def grade(self, reply: str, answer: str) -> bool:
        return _squash(answer) in _squash(reply)


class Regex(Grader):
    name = "regex"

    def validate(self, answer: str, choices: list[str] | None) -> None:
        super().validate(answer, choices)
        try:
            re.compile(answer, REGEX_FLAGS)
        except re.error as e:
            raise ProbeError(f"invalid regex {answer!r}: {e}") from None

    def grade(self, reply: str, answer: str) -> bool:
        return re.search(answer, reply, REGEX_FLAGS) is not None


class Choice(Grader):
    """Multiple choice by log-likelihood; `grade` compares the picked choice (the 'reply') with the answer."""

    name = "choice"
    generates = False

    def validate(self, answer: str, choices: list[str] | None) -> None:
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise ProbeError("a 'choice' probe needs 'choices': a list of at least two strings")
        if any(not c.strip() for c in choices):
            raise ProbeError("a choice cannot be empty")
        if len(set(choices)) != len(choices):
            raise ProbeError(f"choices must be distinct: {choices}")
        if answer not in choices:
            raise ProbeError(f"the answer {answer!r} is not among the choices {choices}")
        for a in choices:
            for b in choices:
                if a != b and b.startswith(a):
                    raise ProbeError(
                        f"choice {a!r} is the beginning of {b!r}; as starts of a reply they cannot be told apart"
                    )

    def grade(self, reply: str, answer: str) -> bool:
        return reply == answer


GRADERS: dict[str, Grader] = {g.name: g for g in (Exact(), Contains(), Regex(), Choice())}


def grader_for(name: str) -> Grader:
    try:
        return GRADERS[name]
    except KeyError:
        raise ProbeError(f"unknown grader {name!r}; use one of {', '.join(GRADERS)}") from None


def check_name(value: Any, what: str) -> str:
    """A skill or category name: a short non-empty string of letters, digits and - _ . : / or spaces."""
    if not isinstance(value, str) or not value.strip():
        raise ProbeError(f"{what} must be a non-empty string")
    value = value.strip()
    if len(value) > 80 or not set(value) <= NAME_CHARS:
        raise ProbeError(f"{what} {value!r} must be at most 80 letters, digits, spaces or - _ . : /")
    return value


def validate_probe(spec: ProbeSpec) -> ProbeSpec:
    """The spec itself if it can be graded; raises ProbeError otherwise."""
    grader = grader_for(spec.grader)
    if not isinstance(spec.answer, str) or not spec.answer.strip():
        raise ProbeError("the answer cannot be empty")
    grader.validate(spec.answer, spec.choices)
    return spec


def parse_probe(obj: Any, *, default_skill: str | None = None) -> ProbeSpec:
    """One probe from its JSON form `{"id"?, "skill", "category"?, "messages", "answer", "grader", "choices"?}`."""
    if not isinstance(obj, dict):
        raise ProbeError("a probe must be a JSON object")
    skill = obj.get("skill", default_skill)
    external_id = obj.get("id")
    if external_id is not None and (not isinstance(external_id, str | int) or not str(external_id).strip()):
        raise ProbeError("'id' must be a non-empty string")
    if external_id is not None and len(str(external_id)) > 80:
        raise ProbeError("'id' must be at most 80 characters")
    choices = obj.get("choices")
    spec = ProbeSpec(
        skill=check_name(skill, "skill"),
        messages=validate_messages(obj.get("messages")),
        answer=obj.get("answer") if isinstance(obj.get("answer"), str) else "",
        grader=obj.get("grader") if isinstance(obj.get("grader"), str) else "",
        choices=list(choices) if isinstance(choices, list) else choices,
        category=check_name(obj["category"], "category") if obj.get("category") else "",
        external_id=str(external_id).strip() if external_id is not None else None,
    )
    if "grader" not in obj:
        raise ProbeError("missing 'grader' (one of exact, contains, regex, choice)")
    return validate_probe(spec)


def probe_to_json(spec: ProbeSpec) -> dict[str, Any]:
    """The JSON form `parse_probe` reads back."""
    out: dict[str, Any] = {"id": spec.external_id, "skill": spec.skill, "category": spec.category}
    out |= {"messages": spec.messages, "answer": spec.answer, "grader": spec.grader}
    if spec.choices is not None:
        out["choices"] = spec.choices
    return {k: v for k, v in out.items() if v not in (None, "")}


def load_general_suite(path: Path = GENERAL_SUITE) -> list[ProbeSpec]:
    """The built-in general suite shipped with Apprentice; every item must parse and carry a unique id."""
    if not path.exists():
        raise ProbeError(f"the built-in general suite is missing ({path}); reinstall Apprentice")
    specs, seen = [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            spec = parse_probe(json.loads(line), default_skill=GENERAL_SKILL)
        except (json.JSONDecodeError, ApprenticeError) as e:
            raise ProbeError(f"{path.name} line {number}: {e}") from None
        if not spec.external_id or spec.external_id in seen:
            raise ProbeError(f"{path.name} line {number}: every built-in probe needs a unique 'id'")
        seen.add(spec.external_id)
        specs.append(spec)
    return specs
