"""Graders, probe validation, and the shipped general suite."""

from __future__ import annotations

import pytest

from learner.probes import GRADERS, ProbeError, load_general_suite, parse_probe
from storage.errors import ApprenticeError

USER = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.mark.parametrize(
    "grader, answer, reply, expected",
    [
        ("exact", "Paris", "Paris", True),
        ("exact", "Paris", "  paris. ", True),
        ("exact", "Paris", '"Paris"', True),
        ("exact", "Paris", "The capital is Paris.", False),
        ("exact", "New York", "new   york", True),
        ("contains", "Paris", "The capital of France is Paris.", True),
        ("contains", "paris", "PARIS!", True),
        ("contains", "New York", "It is New\nYork City", True),
        ("contains", "Paris", "It is Lyon.", False),
        ("regex", r"\b4\b", "2 + 2 = 4.", True),
        ("regex", r"\b4\b", "The answer is 14.", False),
        ("regex", "forty[- ]?two", "Forty-two", True),
        ("regex", "(?-i:HELLO)", "hello", False),
        ("regex", "(?-i:HELLO)", "HELLO world", True),
        ("regex", "start.*end", "start\nmiddle\nend", True),
        ("choice", "Eight", "Eight", True),
        ("choice", "Eight", "Six", False),
    ],
)
def test_graders(grader, answer, reply, expected):
    assert GRADERS[grader].grade(reply, answer) is expected


def probe(**overrides):
    return {"id": "p1", "skill": "geo", "messages": USER, "answer": "Paris", "grader": "contains"} | overrides


def test_parse_probe_reads_every_field():
    spec = parse_probe(probe(grader="choice", choices=["Paris", "Lyon"], category="capitals"))
    assert (spec.external_id, spec.skill, spec.category, spec.grader) == ("p1", "geo", "capitals", "choice")
    assert spec.choices == ["Paris", "Lyon"] and spec.messages == USER


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"grader": "regex", "answer": "(unclosed"}, "invalid regex '(unclosed'"),
        ({"grader": "choice", "choices": ["Lyon", "Nice"]}, "the answer 'Paris' is not among the choices"),
        ({"grader": "choice"}, "needs 'choices'"),
        ({"grader": "choice", "choices": ["Paris", "Paris"]}, "choices must be distinct"),
        ({"grader": "contains", "choices": ["Paris", "Lyon"]}, "takes no choices"),
        (
            {"grader": "choice", "choices": ["Paris", "Paris, Texas"]},
            "choice 'Paris' is the beginning of 'Paris, Texas'",
        ),
        ({"grader": "fuzzy"}, "unknown grader 'fuzzy'"),
        ({"answer": "  "}, "the answer cannot be empty"),
        ({"skill": ""}, "skill must be a non-empty string"),
        ({"skill": "<script>"}, "must be at most 80 letters"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "must be the user turn"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "unknown role 'wizard'"),
    ],
)
def test_bad_probes_are_refused_with_the_reason(overrides, message):
    with pytest.raises(ApprenticeError) as info:
        parse_probe(probe(**overrides))
    assert message in str(info.value)


def test_missing_grader_is_named():
    item = probe()
    del item["grader"]
    with pytest.raises(ProbeError, match="missing 'grader'"):
        parse_probe(item)


def test_general_suite_loads_and_is_sizeable():
    suite = load_general_suite()
    assert len(suite) >= 200, "the built-in general suite should hold a few hundred items"
    assert {p.skill for p in suite} == {"general"}
    assert len({p.external_id for p in suite}) == len(suite)
    assert len({p.category for p in suite}) >= 3
