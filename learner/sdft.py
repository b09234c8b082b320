"""SDFT (self-distillation fine-tuning): on-policy rollouts from the student, then per-token divergence between the
teacher (the live version, demonstration in its context) and the student (no demonstration) on those tokens.

One step (`sdft_step`): sample one completion y per prompt from the current student (batched, KV cache, no grad,
through a merged copy of the weights); teacher log-probs on [teacher prompt; y] without gradient; student log-probs
on [student prompt; y] with gradient; loss = forward KL(teacher || student) over the full vocabulary per completion
token (logits / temperature before log-softmax), the first `skip_first_tokens` tokens left out, mean over a
sequence's tokens, then mean over the batch's sequences. Options: reverse KL, generalized JSD, top-k + tail bucket,
EMA teacher, rollouts sampled by the teacher or taken from the demonstration itself, several rollouts per prompt, an
SFT term (`learner.config`). Rollouts from the frozen teacher do not depend on the student, so `with_rollouts`
samples several steps' worth at once, and rollouts the teacher samples bring the teacher's logits with them (no
separate teacher pass).

Why not TRL's SDFTTrainer (trl 1.16, `trl.experimental.sdft`): with a LoRA model its teacher is either the adapter-
disabled base or an EMA adapter started at zero, never the live version, so a second round would pull the student
back to the original model; it left-truncates the teacher prompt (which can cut the question away); and its defaults
(top-100 support, alpha 0.5, 8 generations) are not the paper's. Its loss helpers are small, but depending on trl (and
its experimental API) for ~40 lines is not worth it, so the divergence is written here and tested against hand
computations (tests/test_sdft.py). The importance ratio of the paper (fact 7) corrects vLLM-vs-trainer mismatch;
rollouts here come from the trainer's own weights, so it is 1 and left out.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator
from typing import Any

from learner.prompts import Prompt
from learner.session import BASE, STUDENT, TEACHER, Session, completion_logits, refresh_rollout_model
from learner.sft import answer_loss_backward


def divergence(student_logp: Any, teacher_logp: Any, kind: str, beta: float = 0.5) -> Any:
    """Per-position divergence summed over the last axis, from log-probabilities (same support on both sides).

    forward_kl = sum_v p_t (log p_t - log p_s); reverse_kl = sum_v p_s (log p_s - log p_t);
    jsd = beta * KL(t || m) + (1 - beta) * KL(s || m) with m = beta * p_t + (1 - beta) * p_s."""
    import math

    import torch

    if kind == "forward_kl":
        return (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1)
    if kind == "reverse_kl":
        return (student_logp.exp() * (student_logp - teacher_logp)).sum(-1)
    if kind == "jsd":
        mix = torch.logsumexp(torch.stack([teacher_logp + math.log(beta), student_logp + math.log(1 - beta)]), dim=0)
        kl_t = (teacher_logp.exp() * (teacher_logp - mix)).sum(-1)
        kl_s = (student_logp.exp() * (student_logp - mix)).sum(-1)
        return beta * kl_t + (1 - beta) * kl_s
    raise ValueError(f"unknown divergence {kind!r}")


def topk_logprobs(student: Any, teacher: Any, k: int, *, tail: bool, support: str) -> tuple[Any, Any]:
    """Both sides' log-probs on one side's top-k tokens, plus a tail bucket (1 - captured mass) or renormalized."""
    import torch

    k = min(k, student.shape[-1])
    indices = (student if support == "student" else teacher).topk(k, dim=-1).indices
    out = []
    for logits in (student, teacher):
        logp = logits.gather(-1, indices) - logits.logsumexp(-1, keepdim=True)
        if tail:
            captured = logp.logsumexp(-1, keepdim=True).clamp(max=-1e-7)
            logp = torch.cat([logp, torch.log(-torch.expm1(captured))], dim=-1)
        else:
            logp = logp - logp.logsumexp(-1, keepdim=True)
        out.append(logp)
    return out[0], out[1]


def token_divergence(student_logits: Any, teacher_logits: Any, config: Any, teacher_temperature: float = 0.0) -> Any:
    """(B, C) divergence per completion position from (B, C, V) logits, divided by the temperature first (the
    teacher's by `teacher_temperature` when that is given)."""
    student = student_logits.float() / config.temperature
    teacher = teacher_logits.float() / (teacher_temperature or config.temperature)
    if config.top_k:
        s, t = topk_logprobs(student, teacher, config.top_k, tail=config.top_k_tail, support=config.top_k_support)
    else:
        s, t = student.log_softmax(-1), teacher.log_softmax(-1)
    return divergence(s, t, config.loss, config.jsd_beta)


def loss_mask(lengths: list[int], width: int, skip: int, device: Any = None) -> Any:
    """(B, width) 1.0 on completion tokens that count: position >= skip and < the completion's length."""
    import torch

    pos = torch.arange(width, device=device).unsqueeze(0)
    lens = torch.tensor(lengths, device=device).unsqueeze(1)
    return ((pos >= skip) & (pos < lens)).float()


def per_sequence_mean(per_token: Any, mask: Any) -> tuple[Any, Any]:
    """(mean over each sequence's counted tokens, which sequences have any)."""
    counts = mask.sum(-1)
    return (per_token * mask).sum(-1) / counts.clamp(min=1), counts > 0


TEACHER_LOGITS_BYTES = 2**30  # above this, teacher-sampled rollouts do not keep their logits (a teacher pass runs)


def sample(
    session: Session, batch: list[Prompt], *, source: str | None = None, budget: int | None = None
) -> tuple[list[list[int]], list[Any] | None]:
    """One sampled completion per prompt, ending with its end-of-turn token if it ended: from the current student on
    the student prompt, or with `rollout_from="teacher"` from the teacher on the teacher prompt (with
    `rollout_from="demonstration"` nothing is sampled: the completion is the demonstration's answer). With the teacher's
    samples come its (len, V) logits on each completion's tokens: the teacher pass of the loss (same weights, prompt
    and tokens) comes free with the sampling, unless they would take more than TEACHER_LOGITS_BYTES (a large
    vocabulary, long rollouts) or the passes run under bf16 autocast, where the sampling copy's bf16 logits are not the
    training pass's (1.6e-3 nats per token apart on the built-in model); otherwise None."""
    import contextlib

    import torch
    from transformers import GenerationConfig

    cfg, tok = session.config, session.tokenizer
    source = source or cfg.rollout_from
    if source == "demonstration":
        return [list(p.answer_ids) for p in batch], None
    name = {"teacher": TEACHER, "base": BASE}.get(source, STUDENT)
    model = refresh_rollout_model(session, name)
    context: contextlib.AbstractContextManager = contextlib.nullcontext()
    if model is None:
        model, context = session.model, session.adapter(name)
    if budget is None:
        longest = max(len(p.answer_ids) for p in batch)
        budget = min(cfg.max_new_tokens, int(longest * cfg.new_tokens_factor) + cfg.new_tokens_margin)
    stops = sorted({session.eot_id, tok.eos_token_id} - {None})
    vocab = model.get_output_embeddings().weight.shape[0]
    fits = len(batch) * budget * vocab * 4 <= TEACHER_LOGITS_BYTES  # generate keeps them in fp32
    keep = name != STUDENT and not session.autocast and fits
    generation = GenerationConfig(
        do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, top_k=0, max_new_tokens=budget,
        eos_token_id=stops, pad_token_id=tok.pad_token_id, output_logits=keep, return_dict_in_generate=keep,
    )  # fmt: skip
    prompts = [p.teacher_ids if name == TEACHER else p.student_ids for p in batch]
    enc = tok.pad({"input_ids": prompts}, return_tensors="pt").to(session.device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), session.forward_context(), context:
            out = model.generate(**enc, generation_config=generation)
    finally:
        model.train(was_training)
    sequences = out.sequences if keep else out
    completions = []
    for row in sequences[:, enc["input_ids"].shape[1] :].tolist():
        end = next((i for i, t in enumerate(row) if t in stops), None)
        completions.append(row if end is None else row[: end + 1])
    if not keep:
        return completions, None
    dtype = next(model.parameters()).dtype  # what the teacher pass would have produced
    logits = torch.stack([step.to(dtype) for step in out.logits], dim=1)
    return completions, [logits[i, : len(c)] for i, c in enumerate(completions)]


def stack_rows(rows: list[Any], width: int) -> Any:
    """(B, width, V) from (len_i, V) rows, zero past each row's length (those positions are masked out)."""
    out = rows[0].new_zeros(len(rows), width, rows[0].shape[-1])
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def fixed_rollouts(cfg: Any, source: str | None = None) -> bool:
    """Whether the rollouts stay the same for the whole round (the demonstrations, or sampled from the frozen teacher
    or the base)."""
    source = source or cfg.rollout_from
    return source in ("base", "demonstration") or (source == "teacher" and cfg.teacher == "frozen")


# one step's (expanded) batch: completions, the teacher's logits on them (when it sampled them), generation seconds
Rollouts = tuple[list[list[int]], list[Any] | None, float]


def with_rollouts(
    session: Session, stream: Iterable[list[Prompt]], *, source: str | None = None, budget: int | None = None
) -> Iterator[tuple[list[Prompt], Rollouts]]:
    """Each step's batch with its rollouts (from `source`, default `rollout_from`). From the frozen teacher,
    `rollout_group_steps` steps' rollouts are sampled in one generation (each step is charged its share of the time);
    otherwise one step at a time, lazily, so that every step samples from the student (or EMA teacher) as the
    previous step left it."""
    cfg = session.config
    group = cfg.rollout_group_steps if fixed_rollouts(cfg, source) else 1
    copies = cfg.samples_per_prompt if source is None else 1
    stream = iter(stream)
    while chunk := list(itertools.islice(stream, group)):
        expanded = [[p for p in b for _ in range(copies)] for b in chunk]
        t0 = time.perf_counter()
        completions, teacher = sample(session, [p for b in expanded for p in b], source=source, budget=budget)
        share = (time.perf_counter() - t0) / len(chunk)
        at = 0
        for demonstrations, b in zip(chunk, expanded, strict=True):
            rows = None if teacher is None else teacher[at : at + len(b)]
            yield demonstrations, (completions[at : at + len(b)], rows, share)
            at += len(b)


def distill_backward(
    session: Session, batch: list[Prompt], completions: list[list[int]], teacher_rows: list[Any] | None, weight: float,
    reference: str = TEACHER, teacher_temperature: float = 0.0,
) -> dict[str, Any]:  # fmt: skip
    """Backward of `weight` x the mean per-sequence divergence (adapter `reference` on [teacher prompt; y], student on
    [student prompt; y]) over the batch's sequences that have loss tokens; returns the sums and timings."""
    import torch

    cfg = session.config
    lengths = [len(c) for c in completions]
    n_valid = int(session.total(sum(n > cfg.skip_first_tokens for n in lengths)))  # over every rank's share
    out = {"loss_sum": 0.0, "kl_sum": 0.0, "n_valid": n_valid, "teacher_s": 0.0, "student_s": 0.0}
    for start in range(0, len(batch), cfg.micro_batch_size):
        part, comps = batch[start : start + cfg.micro_batch_size], completions[start : start + cfg.micro_batch_size]
        t1 = time.perf_counter()
        if teacher_rows is None:
            with torch.no_grad(), session.adapter(reference):
                teacher = completion_logits(session, [p.teacher_ids for p in part], comps)
        else:
            width = max(max(len(c) for c in comps), 1)
            teacher = stack_rows(teacher_rows[start : start + cfg.micro_batch_size], width)
        t2 = time.perf_counter()
        student = completion_logits(session, [p.student_ids for p in part], comps)
        mask = loss_mask([len(c) for c in comps], student.shape[1], cfg.skip_first_tokens, session.device)
        per_seq, valid = per_sequence_mean(token_divergence(student, teacher, cfg, teacher_temperature), mask)
        if n_valid and valid.any():
            (per_seq[valid].sum() * (weight / n_valid)).backward()
        out["loss_sum"] += float(per_seq[valid].detach().sum())
        if cfg.loss != "forward_kl" or cfg.top_k:
            with torch.no_grad():
                full = cfg.__class__(**{**cfg.to_dict(), "loss": "forward_kl", "top_k": 0})
                kl_seq, _ = per_sequence_mean(token_divergence(student, teacher, full, teacher_temperature), mask)
                out["kl_sum"] += float(kl_seq[valid].sum())
        else:
            out["kl_sum"] += float(per_seq[valid].detach().sum())
        out["teacher_s"] += t2 - t1
        out["student_s"] += time.perf_counter() - t2
    out["loss_sum"], out["kl_sum"] = session.total(out["loss_sum"]), session.total(out["kl_sum"])
    return out


def sdft_step(session: Session, batch: list[Prompt], rollouts: Rollouts | None = None) -> dict[str, Any]:
    """Rollouts (sampled here unless given, from `with_rollouts`), teacher and student passes and backward for one
    optimizer step (the caller steps the optimizer)."""
    cfg = session.config
    demonstrations, batch = batch, [p for p in batch for _ in range(cfg.samples_per_prompt)]
    if rollouts is None:
        t0 = time.perf_counter()
        completions, teacher_rows = sample(session, batch)
        t_gen = time.perf_counter() - t0
    else:
        completions, teacher_rows, t_gen = rollouts
    lengths = [len(c) for c in completions]
    sums = distill_backward(session, batch, completions, teacher_rows, 1.0, teacher_temperature=cfg.teacher_temperature)
    n = max(sums["n_valid"], 1)
    sft_loss, t_student = None, sums["student_s"]
    if cfg.sft_weight:
        sft_loss, _, seconds = answer_loss_backward(session, demonstrations, cfg.sft_weight)
        t_student += seconds
    tokens = session.total(sum(lengths))
    return {
        "loss": sums["loss_sum"] / n + cfg.sft_weight * (sft_loss or 0.0),
        "kl": sums["kl_sum"] / n,
        "sft_loss": sft_loss,
        "tokens": int(tokens),
        "loss_tokens": int(session.total(sum(max(0, n - cfg.skip_first_tokens) for n in lengths))),
        "completion_len_mean": tokens / session.total(len(lengths)),
        "generation_s": t_gen,
        "teacher_s": sums["teacher_s"],
        "student_s": t_student,
    }


def anchor_step(session: Session, prompts: list[Prompt], rollouts: Rollouts) -> dict[str, Any]:
    """The KL anchor: backward of `anchor_weight` x KL(reference || student) on rollouts of general prompts without
    any demonstration (from `anchor_rollouts`). The reference is the live version (the teacher adapter; the prompts'
    teacher ids are their student ids, so it answers without context) or, with `anchor_to="base"`, the base model."""
    cfg = session.config
    t0 = time.perf_counter()
    completions, teacher_rows, t_gen = rollouts
    reference = BASE if cfg.anchor_to == "base" else TEACHER
    sums = distill_backward(session, prompts, completions, teacher_rows, cfg.anchor_weight, reference)
    return {
        "anchor_kl": sums["kl_sum"] / max(sums["n_valid"], 1),
        "anchor_s": time.perf_counter() - t0 + t_gen,
        "generation_s": t_gen,
    }


def anchor_rollouts(session: Session, stream: Iterable[list[Prompt]]) -> Iterator[tuple[list[Prompt], Rollouts]]:
    """Anchor prompts with their rollouts: from the student (on-policy, each step as the last one left it) or, with
    `anchor_from="teacher"`, from the frozen reference (live version or base, see `anchor_to`) in groups of steps."""
    cfg = session.config
    source = cfg.anchor_from if cfg.anchor_from == "student" or cfg.anchor_to == "live" else "base"
    return with_rollouts(session, stream, source=source, budget=cfg.anchor_max_new_tokens)


def ema_update(session: Session) -> None:
    """teacher <- (1 - rate) * teacher + rate * student (only with config.teacher == "ema")."""
    import torch

    params = dict(session.model.named_parameters())
    with torch.no_grad():
        for name, p in params.items():
            if f".{TEACHER}." in name:
                p.lerp_(params[name.replace(f".{TEACHER}.", f".{STUDENT}.")], session.config.ema_rate)
