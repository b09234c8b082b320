"""Data-parallel rounds (learner.parallel) on the tiny model: 2 CPU processes with the gloo backend write the same
adapter, within float tolerance, as 1 process with the same global batch, for SFT and for SDFT with its KL anchor
(greedy rollouts, top_p near 0, so that both runs sample the same tokens); a round through run_round records every
step; a stop request ends every rank."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from learner.config import LearnerConfig
from learner.parallel import train_parallel
from learner.prompts import Example
from learner.rounds import run_round
from learner.session import TrainingStopped
from learner.training import train
from storage import rounds, versions
from storage.demonstrations import create_demonstration

QUESTIONS = [f"What is the capital of Land{i}?" for i in range(4)]
EXAMPLES = [Example([{"role": "user", "content": q}], f"It is City{i}.", i + 1) for i, q in enumerate(QUESTIONS)]


def cfg(**kw) -> LearnerConfig:
    base = {"autocast": False, "steps": 3, "batch_size": 4, "micro_batch_size": 1, "max_new_tokens": 6,
            "device": "cpu", "learning_rate": 1e-2, "threads": 1, "top_p": 1e-9}  # fmt: skip
    return LearnerConfig(**{**base, **kw})


def adapter(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


def assert_same_adapter(one: Path, two: Path) -> None:
    a, b = adapter(one), adapter(two)
    assert a.keys() == b.keys()
    moved = max(float(t.abs().max()) for k, t in a.items() if "lora_B" in k)
    assert moved > 1e-3, "training moved the adapter"
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= 1e-4 * max(moved, 1.0), f"2 processes differ from 1 by {worst} (adapter moved {moved})"


def test_two_processes_write_the_adapter_of_one_sft(tiny_model_dir, tmp_path):
    config = cfg(method="sft", anchor_weight=0.0)
    one = train(tiny_model_dir, EXAMPLES, config)
    one.save(tmp_path / "one")
    two = train_parallel(tiny_model_dir, EXAMPLES, config, nproc=2)
    two.save(tmp_path / "two")
    assert two.metrics["processes"] == 2 and two.metrics["steps"] == 3
    assert_same_adapter(tmp_path / "one", tmp_path / "two")
    assert [s["loss"] for s in two.steps] == pytest.approx([s["loss"] for s in one.steps], rel=1e-4)
    assert [s["tokens"] for s in two.steps] == [s["tokens"] for s in one.steps]


@pytest.mark.parametrize("backend", ["sqlite"])  # what is tested is the training, not the database
def test_a_two_process_sdft_round_with_the_anchor_matches_one_and_records_its_steps(engine, tiny_model_dir, tmp_path):
    config = cfg(method="sdft", anchor_weight=1.0, anchor_batch_size=2, rollout_from="teacher")
    for e in EXAMPLES:
        create_demonstration(engine, messages=e.messages, corrected_answer=e.answer, status="approved")
    outcome = run_round(engine, model_dir=tiny_model_dir, data_dir=tmp_path, config=config, nproc=2)
    assert outcome.status == "succeeded" and outcome.metrics["processes"] == 2
    version = versions.get_version(engine, name=outcome.version)
    assert [s["step"] for s in rounds.get_round(engine, round_id=version.round_id).steps] == [1, 2, 3]
    one = train(tiny_model_dir, EXAMPLES, config)
    one.save(tmp_path / "one")
    assert_same_adapter(tmp_path / "one", Path(version.adapter_path))
    assert outcome.metrics["kl_first"] == pytest.approx(one.metrics["kl_first"], rel=1e-3, abs=1e-6)


def test_a_stop_request_ends_every_rank(tiny_model_dir):
    with pytest.raises(TrainingStopped):
        train_parallel(tiny_model_dir, EXAMPLES, cfg(method="sft", anchor_weight=0.0, steps=50), nproc=2,
                       should_stop=lambda: True)  # fmt: skip
