"""The SFT baseline: plain next-token cross-entropy on the corrected answer (and its end-of-turn token) after the
student prompt. Same LoRA configuration, optimizer, schedule and number of optimizer steps as SDFT
(`learner.training.train` drives both), so the benchmark compares the objectives and nothing else.

Reduction: mean over all answer tokens of the batch (the usual SFT loss).
"""

from __future__ import annotations

import time
from typing import Any

from learner.prompts import Prompt
from learner.session import Session, completion_logits


def sft_step(session: Session, batch: list[Prompt]) -> dict[str, Any]:
    """Forward and backward on [student prompt; answer] for one optimizer step (the caller steps the optimizer)."""
    loss, tokens, seconds = answer_loss_backward(session, batch, weight=1.0)
    return {
        "loss": loss,
        "kl": None,
        "tokens": tokens,
        "loss_tokens": tokens,
        "generation_s": 0.0,
        "teacher_s": 0.0,
        "student_s": seconds,
    }


def answer_loss_backward(session: Session, batch: list[Prompt], weight: float) -> tuple[float, int, float]:
    """Backward of `weight` x the mean next-token loss over the batch's answer tokens; (that mean, tokens, seconds).
    Also SDFT's optional SFT term (`sft_weight`)."""
    import torch

    cfg = session.config
    total_tokens = int(session.total(sum(len(p.answer_ids) for p in batch)))  # over every rank's share
    loss_sum, t_student = 0.0, 0.0
    for start in range(0, len(batch), cfg.micro_batch_size):
        part = batch[start : start + cfg.micro_batch_size]
        t0 = time.perf_counter()
        answers = [p.answer_ids for p in part]
        logits = completion_logits(session, [p.student_ids for p in part], answers)
        targets = torch.tensor([a + [-100] * (logits.shape[1] - len(a)) for a in answers], device=session.device)
        loss = torch.nn.functional.cross_entropy(
            logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum"
        )
        (loss * (weight / total_tokens)).backward()
        loss_sum += float(loss.detach())
        t_student += time.perf_counter() - t0
    return session.total(loss_sum) / total_tokens, total_tokens, t_student
