"""Training weights are float32 on every device by default. With bf16 weights (the CUDA default before) a continuing
round's teacher, sampled from a copy with the parent's LoRA merged into rounded bf16 weights, is not exactly the
parent version the student starts from. Run on the tiny model on CPU with whatever dtype the default gives CUDA, so
the test fails if that default goes back to bf16. Under bf16 autocast (a CPU with native bf16) the rollout copy is
bf16 as well, so its logits must not serve as the KL targets."""

from __future__ import annotations

from pathlib import Path

import torch

import learner.session
from learner.config import LearnerConfig
from learner.prompts import build_prompts
from learner.sdft import anchor_rollouts, anchor_step, loss_mask, sample, stack_rows
from learner.session import TEACHER, completion_logits, open_session, weight_dtype
from learner.training import anchor_batches, train
from tests.test_sdft import DEMOS


def _teacher_gap(model_dir: str, parent: str, dtype: str) -> float:
    """The largest log-prob difference between the teacher's logits as sampling returns them and the teacher
    adapter's own pass, over every completion token."""
    config = LearnerConfig(device="cpu", dtype=dtype, autocast=False, rollout_from="teacher", max_new_tokens=12,
                           batch_size=2, micro_batch_size=2)  # fmt: skip
    session = open_session(model_dir, config, parent_adapter=parent)
    prompts, _ = build_prompts(session.tokenizer, DEMOS, config)
    torch.manual_seed(0)
    completions, rows = sample(session, prompts)
    width = max(len(c) for c in completions)
    with torch.no_grad(), session.adapter(TEACHER):
        passed = completion_logits(session, [p.teacher_ids for p in prompts], completions)
    mask = loss_mask([len(c) for c in completions], width, 0).bool()
    sampled = stack_rows(rows, width).float().log_softmax(-1)
    return float((passed.float().log_softmax(-1) - sampled)[mask].abs().max())


def _parent(model_dir: str, folder: Path) -> str:
    """An adapter far from the base: what a continuing round starts from."""
    big = LearnerConfig(device="cpu", autocast=False, method="sft", steps=3, learning_rate=5e-2, batch_size=2,
                        micro_batch_size=2, max_new_tokens=8)  # fmt: skip
    train(model_dir, DEMOS, big).save(folder)
    return str(folder)


def test_a_continuing_rounds_teacher_is_the_parent_version_with_default_weights(tiny_model_dir, tmp_path):
    parent = _parent(tiny_model_dir, tmp_path / "parent")
    cuda_default = {torch.float32: "float32", torch.bfloat16: "bfloat16"}[weight_dtype(LearnerConfig(device="cuda"))]
    assert _teacher_gap(tiny_model_dir, parent, cuda_default) < 1e-4
    assert _teacher_gap(tiny_model_dir, parent, "bfloat16") > 1e-3  # what bf16 weights did


def test_under_bf16_autocast_the_anchor_starts_at_zero(tiny_model_dir, tmp_path, monkeypatch):
    """On a CPU with native bf16 the passes run under autocast and rollouts come from a bf16 copy; the KL targets must
    still be the live version's own pass (on the built-in model the copy's logits were 1.6e-3 nats per token away)."""
    monkeypatch.setattr(learner.session, "fast_cpu_bf16", lambda: True)  # what such a CPU reports
    config = LearnerConfig(device="cpu", anchor_weight=1.0, anchor_from="teacher", anchor_batch_size=2,
                           anchor_max_new_tokens=12)  # fmt: skip
    session = open_session(tiny_model_dir, config, parent_adapter=_parent(tiny_model_dir, tmp_path / "parent"))
    assert session.autocast and session.rollout_model is not None
    torch.manual_seed(0)
    prompts, rollouts = next(anchor_rollouts(session, anchor_batches(session.tokenizer, config, 1)))
    # the student starts as the live version: 0 here, 5.7e-8 with the bf16 copy's logits as targets
    assert anchor_step(session, prompts, rollouts)["anchor_kl"] < 1e-9
