"""The lifelong benchmark end to end on the tiny random model: real rounds through run_round and the gate on a fresh
database per job, the report's JSON schema, table and plot, resuming from the per-round copies, and a fact file
written elsewhere."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from app.bench.learn import config_digest
from app.bench.lifelong import LifelongOptions, job_dir, job_records, prepare, score_live, teaching_order
from app.bench.lifelong_report import run_lifelong
from learner.config import LearnerConfig
from storage.db import make_engine
from tests.test_bench_learn import SMALL, _facts_file


def _options(tiny_model_dir: str, tmp_path: Path, **changes) -> LifelongOptions:
    values = dict(model_dir=tiny_model_dir, out_dir=tmp_path / "out", json_path=tmp_path / "report.json",
                  facts_path=_facts_file(tmp_path), rounds=2, per_round=2, seeds=[0], general_n=3,
                  eval_max_new_tokens=4, overrides={"sft": SMALL, "sdft": SMALL}, progress=False)  # fmt: skip
    return LifelongOptions(**{**values, **changes})


def test_lifelong_runs_rounds_under_the_gate_and_resumes(tiny_model_dir: str, tmp_path: Path) -> None:
    options = _options(tiny_model_dir, tmp_path)
    report = run_lifelong(options)
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc == json.loads(json.dumps(report))
    assert set(doc) >= {"model", "facts", "seeds", "rounds", "per_round", "base", "methods"}
    assert set(doc["base"]) >= {"general", "direct_mc", "indirect_mc", "same_gen", "para_gen"}
    for method in ("sdft", "sft"):
        final = doc["methods"][method]["final"]
        assert set(final) >= {"general", "general_drop", "direct_mc", "indirect_mc", "same_gen", "para_gen",
                              "promoted", "rounds", "retention_min", "round_seconds", "per_seed"}  # fmt: skip
        assert final["per_seed"]["general"] == [final["general"]]
        assert final["general_drop"] == pytest.approx(doc["base"]["general"] - final["general"])
        rounds = doc["methods"][method]["rounds"]
        assert [r["round"] for r in rounds] == [1, 2]
        for r in rounds:
            assert set(r) >= {"promoted", "reason", "general", "direct_mc", "indirect_mc", "same_gen", "para_gen",
                              "phrase_rate", "train_s", "gate_s"}  # fmt: skip
            assert r["reason"][0].startswith(("promoted", "rejected", "not promoted"))
            assert r["train_s"] > 0 and r["gate_s"] > 0
    records = job_records(prepare(options), "sdft", 0)
    assert len(records) == 2 and records[0]["facts"].keys() < records[1]["facts"].keys()  # facts so far, growing
    assert "| sdft |" in (options.out_dir / "bench_lifelong.md").read_text()
    assert (options.out_dir / "bench_lifelong.png").stat().st_size > 0

    # scoring the live version again after a round that left it live reuses the earlier facts' scores
    run = prepare(options)
    db = make_engine(f"sqlite:///{job_dir(run, 'sft', 0) / 'data' / 'apprentice.db'}")
    full, first = score_live(run, db, 2), score_live(run, db, 1)
    assert first["facts"].keys() < full["facts"].keys()
    assert score_live(run, db, 2, first) == full
    db.dispose()

    # a killed job resumes from the last round's database copy: drop round 2 and run again
    folder = job_dir(prepare(options), "sdft", 0)
    (folder / "rounds" / "r2.json").unlink()
    again = run_lifelong(_options(tiny_model_dir, tmp_path, methods=["sdft"]))
    redone = job_records(prepare(options), "sdft", 0)
    assert len(redone) == 2 and redone[0] == records[0]
    assert again["methods"]["sdft"]["final"]["rounds"] == 2

    # a job is reported from its records alone; an unfinished one resumes only from rounds with a database copy
    for k in (1, 2):
        (folder / "rounds" / f"r{k}.db").unlink()
    assert job_records(prepare(options), "sdft", 0, resumable=True) == redone
    (folder / "rounds" / "r2.json").unlink()
    assert job_records(prepare(options), "sdft", 0) == redone[:1]
    assert job_records(prepare(options), "sdft", 0, resumable=True) == []


def test_teaching_order_interleaves_skills_and_too_few_facts_are_refused(tiny_model_dir: str, tmp_path: Path):
    options = _options(tiny_model_dir, tmp_path)
    run = prepare(options)
    assert [f.skill for f in run.taught] == ["geography", "people", "geography", "people"]
    assert teaching_order(run.taught) == run.taught
    with pytest.raises(ValueError, match="need 6 facts; the fact file has 4"):
        prepare(_options(tiny_model_dir, tmp_path, rounds=3))


def test_job_names_hash_only_the_fields_that_differ_from_the_defaults() -> None:
    # a field left at its default adds nothing, so a new setting that keeps the old behaviour renames no cached job
    assert config_digest(LearnerConfig()) == hashlib.sha256(json.dumps([{}]).encode()).hexdigest()[:8]
    builtin = LearnerConfig.preset("builtin")
    assert config_digest(builtin.replace(adam_eps=1e-8)) == config_digest(builtin)
    assert config_digest(builtin.replace(adam_eps=1e-3)) != config_digest(builtin)
    assert config_digest(builtin, ["a prompt"]) != config_digest(builtin, [])
