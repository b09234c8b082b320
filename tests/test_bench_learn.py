"""The learning benchmark end to end on the tiny random model: a real run (train with the learner, score with the
evaluator) on 2 facts, checking the JSON schema, the table, the plots, resuming from the cache, and fact files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.bench import facts as bf
from app.bench.learn import BenchOptions
from app.bench.learn_report import run_bench
from storage.errors import ApprenticeError

SMALL = {"min_steps": 2, "epochs": 1.0, "max_new_tokens": 6, "batch_size": 2, "micro_batch_size": 2}


def _facts_file(tmp_path: Path) -> Path:
    facts = [json.loads(line) for line in bf.FACTS.read_text().splitlines() if line.strip()]
    picked = [f for f in facts if f["skill"] == "geography"][:2] + [f for f in facts if f["skill"] == "people"][:2]
    path = tmp_path / "other.jsonl"
    path.write_text("\n".join(json.dumps(f) for f in picked) + "\n")
    return path


def test_bench_learn_runs_end_to_end_and_resumes(tiny_model_dir: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    options = BenchOptions(
        model_dir=tiny_model_dir,
        out_dir=out,
        json_path=tmp_path / "report.json",
        facts_path=_facts_file(tmp_path),
        quick=True,
        general_n=3,
        eval_max_new_tokens=4,
        overrides={"sft": SMALL, "sdft": SMALL},
        progress=False,
    )
    report = run_bench(options)
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc == json.loads(json.dumps(report))
    assert doc["model"] and doc["seeds"] == [0] and doc["facts"]["n"] == 2  # 1 report fact per skill in quick mode
    for method in ("base", "sft", "sdft"):
        row = doc["methods"][method]
        for key in ("direct", "indirect", "direct_mc", "indirect_mc", "general", "general_drop", "seconds"):
            assert row[key] is not None, (method, key)
        assert all(0 <= row[k] <= 1 for k in ("direct", "indirect", "direct_mc", "indirect_mc", "general"))
    teacher = doc["teacher_in_context"]
    assert all(0 <= teacher[k] <= 1 for k in ("direct", "indirect", "direct_mc", "indirect_mc"))
    assert "{demonstration}" in teacher["template"] and "In context (" in (out / "bench_learn.md").read_text()
    sdft = doc["methods"]["sdft"]
    assert sdft["cost"]["generation_s"] > 0 and sdft["cost"]["student_s"] > 0
    assert 0 <= sdft["cost"]["teacher_s"] < sdft["cost"]["generation_s"]  # teacher rollouts bring the teacher's logits
    assert sdft["per_seed"]["direct_mc"]
    # SFT samples only its KL anchor's answers (the builtin preset gives both methods the anchor)
    assert doc["methods"]["sft"]["cost"]["generation_s"] > 0
    assert doc["job_seconds"] >= sum(doc["methods"][m]["seconds"] for m in ("sft", "sdft"))
    assert doc["cost_ratio"] > 0 and doc["methods"]["sft"]["steps"] == sdft["steps"] == 2
    assert set(doc["equal_forgetting"]) == {"0.02", "0.05", "0.1"}
    for level, row in doc["equal_forgetting"].items():
        assert all(p is None or p["general_drop"] <= float(level) + 1e-9 for p in row.values())
    assert [set(p) >= {"lr", "steps", "direct_mc", "indirect_mc", "general_drop", "seconds"}
            for p in doc["frontier"]["sft"] + doc["frontier"]["sdft"]] == [True, True]  # fmt: skip
    for method in ("sft", "sdft"):  # two rounds x two skills, the second skill unseen after round 1
        matrix = doc["sequential"][method]
        assert len(matrix) == 2 and matrix[0][1] is None and None not in matrix[1]
    for name in ("bars.png", "frontier.png", "sequential.png", "cost.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "| sdft" in (out / "bench_learn.md").read_text()
    runs = sorted((p.name, p.stat().st_mtime_ns) for p in out.glob("cache/*/runs/*.json"))
    assert len(runs) == 8  # base, the teacher in context, 2 default points, 2 x 2 sequential rounds
    again = run_bench(options)  # resumes: every job is cached, nothing is retrained
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.glob("cache/*/runs/*.json")) == runs
    assert again["methods"] == report["methods"] and again["jobs"] == {"done": 6, "planned": 6}
    victim = next(out.glob("cache/*/runs/point-sdft-*.json"))
    victim.unlink()
    partial = run_bench(options, run_jobs=False)  # a report of what is cached, nothing run
    assert not victim.exists() and partial["jobs"] == {"done": 5, "planned": 6}
    assert "sdft" not in partial["methods"] and partial["cost_ratio"] is None
    assert "5 of 6 jobs done" in (out / "bench_learn.md").read_text()


def test_fact_file_errors_and_split(tmp_path: Path) -> None:
    facts = bf.load_facts()
    assert len(facts) >= 48 and len(bf.skills_in_order(facts)) >= 3
    roles = bf.split(facts)
    assert 0.2 < sum(r == "tune" for r in roles.values()) / len(roles) < 0.3
    assert bf.split(list(reversed(facts))) == roles  # fixed by id, not by file order
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "skill": "s", "demonstration": {"messages": [], "answer": "a"}}\n')
    with pytest.raises(ApprenticeError, match="bad.jsonl line 1: missing direct, indirect"):
        bf.load_facts(bad)
    row = json.loads(bf.FACTS.read_text().splitlines()[0])
    row["direct"][0]["choices"] = ["only", "wrong"]
    bad.write_text(json.dumps(row) + "\n")
    with pytest.raises(ApprenticeError, match="must be distinct and contain the answer"):
        bf.load_facts(bad)
    assert bf.leaked(["The capital of France is Quellmar.", "Paris"], ["Quellmar"]) == [
        "The capital of France is Quellmar."
    ]
    assert bf.leaked(["Quellmarish"], ["Quellmar"]) == []
    asked = bf.fact_probes(facts[:1], "{question} | {demonstration}")[0]
    assert asked.messages == [{"role": "user", "content": f"{facts[0].direct[0].question} | {facts[0].answer}"}]
