"""Evaluation on the tiny model: batched scoring is exact, runs are deterministic, results are stored, adapters
count, and `apprentice eval --json` writes the documented shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from learner.evaluate import EvalConfig, continuation_logprobs, evaluate_version, load_version
from storage import evals
from storage.db import transaction
from storage.models import ModelVersion
from storage.probes import add_probes

APPRENTICE = str(Path(sys.executable).with_name("apprentice"))
NO_SUITE = EvalConfig(batch_size=3, max_new_tokens=8, general_suite=None)


def mini_probes() -> list[dict]:
    def q(text: str) -> list[dict]:
        return [{"role": "user", "content": text}]

    return [
        {"skill": "mini", "messages": q("Capital of France?"), "answer": "Paris", "grader": "contains"},
        {"skill": "mini", "messages": q("2+2?"), "answer": r"\b4\b", "grader": "regex"},
        {"skill": "mini", "messages": q("Say yes."), "answer": "yes", "grader": "exact"},
        {"skill": "mini", "messages": q("A much longer question about the colour of the sky on a clear day?"),
         "answer": "blue", "grader": "contains"},
        {"skill": "mc", "messages": q("Legs of a spider?"), "answer": "Eight", "grader": "choice",
         "choices": ["Six", "Eight", "Ten"], "category": "animals"},
        {"skill": "mc", "messages": q("Pick one"), "answer": "b", "grader": "choice", "choices": ["a", "b"]},
    ]  # fmt: skip


def test_batched_choice_logprobs_equal_unpadded_ones(tiny_model_dir):
    model, tokenizer = load_version(tiny_model_dir, None, device="cpu")
    pairs = [([5, 6, 7, 8, 9, 10], [11, 12]), ([5, 6], [13]), ([20, 21, 22], [23, 24, 25, 26])]
    batched = continuation_logprobs(model, tokenizer, pairs, EvalConfig(choice_batch_size=3))
    for (prompt, cont), got in zip(pairs, batched, strict=True):
        with torch.inference_mode():
            logp = torch.log_softmax(model(torch.tensor([prompt + cont])).logits[0].float(), -1)
        expected = sum(logp[len(prompt) - 1 + k, tok].item() for k, tok in enumerate(cont))
        assert got == pytest.approx(expected, abs=1e-4)


def test_same_version_same_scores_twice(engine, tiny_model_dir):
    add_probes(engine, items=mini_probes())
    first = evaluate_version(engine, tiny_model_dir, "v0", config=NO_SUITE)
    second = evaluate_version(
        engine, tiny_model_dir, "v0", config=EvalConfig(batch_size=3, max_new_tokens=8, general_suite=None)
    )
    assert [(p.probe_id, p.reply, p.correct, p.choice_logprobs) for p in first.probes] == [
        (p.probe_id, p.reply, p.correct, p.choice_logprobs) for p in second.probes
    ]
    assert first.to_json() == second.to_json()
    assert set(first.to_json()["skills"]) == {"mini", "mc"}
    assert first.to_json()["skills"]["mini"]["n"] == 4 and first.to_json()["skills"]["mc"]["n"] == 2
    assert all(p.choice_logprobs and p.reply in p.choice_logprobs for p in first.probes if p.grader == "choice")


def test_results_are_stored_with_details_and_matrix(engine, tiny_model_dir):
    add_probes(engine, items=mini_probes())
    report = evaluate_version(engine, tiny_model_dir, "v0", skills=["mc"], config=NO_SUITE)
    stored = evals.latest_scores(engine, version="v0")
    assert set(stored) == {"mc"} and stored["mc"].n == 2 and stored["mc"].score == report.skills["mc"].score
    assert stored["mc"].fingerprint == report.skills["mc"].fingerprint
    details = evals.latest_details(engine, version="v0", skill="mc")
    assert details["categories"]["animals"]["n"] == 1
    assert [p["external_id"] for p in details["probes"]] == [None, None] and len(details["probes"]) == 2
    matrix = evals.score_matrix(engine)
    assert matrix.skills == ["mc"] and matrix.scores["v0"]["mc"]["n"] == 2
    assert [v["name"] for v in matrix.versions] == ["v0"]


def test_unknown_skill_or_version_is_a_clear_error(engine, tiny_model_dir):
    from storage.errors import NotFound

    add_probes(engine, items=mini_probes())
    with pytest.raises(NotFound, match="no probes for skill 'nope'"):
        evaluate_version(engine, tiny_model_dir, "v0", skills=["nope"], config=NO_SUITE)
    with pytest.raises(NotFound, match="no model version named 'v9'"):
        evaluate_version(engine, tiny_model_dir, "v9", config=NO_SUITE)


def add_version(engine, name: str, adapter_path: str | None, checksum: str | None = None) -> None:
    with transaction(engine) as s:
        s.add(ModelVersion(name=name, parent="v0", adapter_path=adapter_path, checksum=checksum, status="candidate"))


def random_adapter(model_dir: str, out: Path, scale: float, seed: int = 0) -> str:
    """A LoRA adapter with random (optionally huge) weights: a version that has forgotten everything."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(0.0, scale)
    model.save_pretrained(out)
    return str(out)


def test_an_adapter_version_is_scored_with_its_adapter(engine, tiny_model_dir, tmp_path):
    add_probes(engine, items=mini_probes())
    add_version(engine, "v1", random_adapter(tiny_model_dir, tmp_path / "v1", scale=0.5))
    base = evaluate_version(engine, tiny_model_dir, "v0", config=NO_SUITE)
    adapted = evaluate_version(engine, tiny_model_dir, "v1", config=NO_SUITE)
    assert [p.reply for p in base.probes] != [p.reply for p in adapted.probes]
    assert [p.choice_logprobs for p in base.probes] != [p.choice_logprobs for p in adapted.probes]
    add_version(engine, "v2", str(tmp_path / "missing"))
    with pytest.raises(Exception, match="adapter folder .* is missing"):
        evaluate_version(engine, tiny_model_dir, "v2", config=NO_SUITE)
    add_version(engine, "v3", str(tmp_path / "v1"), checksum="0" * 64)
    with pytest.raises(Exception, match="does not match its recorded checksum"):
        evaluate_version(engine, tiny_model_dir, "v3", config=NO_SUITE)


def test_cli_eval_json(tmp_path, tiny_model_dir):
    from storage.db import make_engine, upgrade

    data = tmp_path / "data"
    data.mkdir()
    db = make_engine(f"sqlite:///{data / 'apprentice.db'}")
    upgrade(db)
    add_probes(db, items=mini_probes())
    db.dispose()
    env = {**os.environ, "APPRENTICE_HOME": str(data), "APPRENTICE_MODEL": tiny_model_dir}
    target = tmp_path / "scores.json"
    cmd = [APPRENTICE, "eval", "--skill", "mini", "--skill", "mc", "--json", str(target), "--max-new-tokens", "8"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    doc = json.loads(target.read_text())
    assert doc["version"] == "v0" and set(doc["skills"]) == {"mini", "mc"}
    assert all(0.0 <= s["score"] <= 1.0 for s in doc["skills"].values()) and doc["skills"]["mc"]["n"] == 2
    assert "mini" in out.stdout and "%" in out.stdout
    printed = subprocess.run([*cmd[:4], "--json"], capture_output=True, text=True, env=env)
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout)["skills"]["mini"]["n"] == 4
    bad = subprocess.run([APPRENTICE, "eval", "--version", "v7"], capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and bad.stderr.strip() == "error: no model version named 'v7'"
