"""Training weights are float32 on every device by default. With bf16 weights (the CUDA default before) a continuing
round's teacher, sampled from a copy with the parent's LoRA merged into rounded bf16 weights, is not exactly the
parent version the student starts from. Run on the tiny model on
CPU with whatever dtype the default gives CUDA, so the test fails if that default goes back to bf16."""

from __future__ import annotations

import torch

from learner.config import LearnerConfig
from learner.prompts import build_prompts
from learner.sdft import loss_mask, sample, stack_rows
from learner.session import TEACHER, completion_logits, open_session, weight_dtype
from learner.training import train
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


def test_a_continuing_rounds_teacher_is_the_parent_version_with_default_weights(tiny_model_dir, tmp_path):
    parent = tmp_path / "parent"
    big = LearnerConfig(device="cpu", autocast=False, method="sft", steps=3, learning_rate=5e-2, batch_size=2,
                        micro_batch_size=2, max_new_tokens=8)  # fmt: skip
    train(tiny_model_dir, DEMOS, big).save(parent)
    cuda_default = {torch.float32: "float32", torch.bfloat16: "bfloat16"}[weight_dtype(LearnerConfig(device="cuda"))]
    assert _teacher_gap(tiny_model_dir, str(parent), cuda_default) < 1e-4
    assert _teacher_gap(tiny_model_dir, str(parent), "bfloat16") > 1e-3  # what bf16 weights did
