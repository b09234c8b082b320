"""The SDFT objective: divergences and reductions against hand-computed values, the first-3-token skip, the packing
of prompts and completions, and a real (tiny) training run: only the student's LoRA moves, the teacher stays."""

from __future__ import annotations

import math

import pytest
import torch

from learner.config import LearnerConfig
from learner.prompts import Example
from learner.sdft import (
    divergence,
    loss_mask,
    per_sequence_mean,
    token_divergence,
    topk_logprobs,
)
from learner.session import STUDENT, TEACHER, completion_logits, open_session
from learner.training import train

P = [0.7, 0.2, 0.1]  # teacher
Q = [0.5, 0.3, 0.2]  # student


def kl(a, b):
    return sum(x * math.log(x / y) for x, y in zip(a, b, strict=True))


def logp(probs):
    return torch.tensor([probs], dtype=torch.float64).log()


def test_forward_and_reverse_kl_match_hand_computation():
    forward = divergence(logp(Q), logp(P), "forward_kl")
    reverse = divergence(logp(Q), logp(P), "reverse_kl")
    # KL(P||Q) = .7 ln(.7/.5) + .2 ln(.2/.3) + .1 ln(.1/.2) = 0.0851...
    assert forward.item() == pytest.approx(kl(P, Q), abs=1e-12)
    assert forward.item() == pytest.approx(0.08512282, abs=1e-7)
    assert reverse.item() == pytest.approx(kl(Q, P), abs=1e-12)
    assert forward.item() != pytest.approx(reverse.item(), abs=1e-3)


def test_jsd_matches_hand_computation():
    beta = 0.3
    mix = [beta * p + (1 - beta) * q for p, q in zip(P, Q, strict=True)]
    expected = beta * kl(P, mix) + (1 - beta) * kl(Q, mix)
    assert divergence(logp(Q), logp(P), "jsd", beta).item() == pytest.approx(expected, abs=1e-12)


def test_logits_are_divided_by_the_temperature_before_log_softmax():
    config = LearnerConfig(temperature=2.0)
    student = torch.tensor([[[2.0, 1.0, 0.0]]])
    teacher = torch.tensor([[[0.0, 2.0, 4.0]]])
    soft = lambda z: [math.exp(v / 2) / sum(math.exp(w / 2) for w in z) for v in z]  # noqa: E731
    expected = kl(soft([0.0, 2.0, 4.0]), soft([2.0, 1.0, 0.0]))
    assert token_divergence(student, teacher, config).item() == pytest.approx(expected, rel=1e-5)


def test_a_teacher_temperature_sharpens_only_the_teacher():
    config = LearnerConfig(temperature=2.0, teacher_temperature=0.5)
    student = torch.tensor([[[2.0, 1.0, 0.0]]])
    teacher = torch.tensor([[[0.0, 2.0, 4.0]]])
    soft = lambda z, t: [math.exp(v / t) / sum(math.exp(w / t) for w in z) for v in z]  # noqa: E731
    expected = kl(soft([0.0, 2.0, 4.0], 0.5), soft([2.0, 1.0, 0.0], 2.0))
    got = token_divergence(student, teacher, config, config.teacher_temperature).item()
    assert got == pytest.approx(expected, rel=1e-5)
    assert token_divergence(student, teacher, config).item() != pytest.approx(got, rel=1e-2)  # the anchor's call


def test_topk_with_tail_bucket_matches_hand_computation():
    # student's top-2 support = tokens 0 and 1; the tail bucket holds token 2's mass on each side
    s, t = topk_logprobs(logp(Q), logp(P), 2, tail=True, support="student")
    assert s.exp().tolist()[0] == pytest.approx([0.5, 0.3, 0.2])
    assert divergence(s, t, "forward_kl").item() == pytest.approx(kl(P, Q), abs=1e-9)  # k=2 of 3 loses nothing here
    s, t = topk_logprobs(logp(Q), logp(P), 1, tail=True, support="student")
    assert s.exp().tolist()[0] == pytest.approx([0.5, 0.5])  # top-1 = token 0, tail = tokens 1 + 2
    assert divergence(s, t, "forward_kl").item() == pytest.approx(kl([0.7, 0.3], [0.5, 0.5]), abs=1e-9)
    s, t = topk_logprobs(logp(Q), logp(P), 2, tail=False, support="teacher")
    assert divergence(s, t, "forward_kl").item() == pytest.approx(kl([0.7 / 0.9, 0.2 / 0.9], [0.5 / 0.8, 0.3 / 0.8]))


def test_first_three_completion_tokens_are_left_out():
    mask = loss_mask([6, 3, 2], width=6, skip=3)
    assert mask.tolist() == [[0, 0, 0, 1, 1, 1], [0] * 6, [0] * 6]
    assert loss_mask([4], width=4, skip=0).tolist() == [[1, 1, 1, 1]]


def test_mean_per_sequence_then_over_the_batch():
    per_token = torch.tensor([[9.0, 9.0, 9.0, 1.0, 2.0, 3.0], [9.0, 9.0, 9.0, 4.0, 0.0, 0.0], [9.0] * 6])
    mask = loss_mask([6, 4, 2], width=6, skip=3)
    per_seq, valid = per_sequence_mean(per_token, mask)
    assert per_seq[:2].tolist() == [2.0, 4.0]  # (1+2+3)/3 and 4/1: not pooled over tokens (that would give 2.5)
    assert valid.tolist() == [True, True, False]  # a completion of <= 3 tokens has nothing to learn from
    assert (per_seq[valid].sum() / valid.sum()).item() == 3.0


def fp32(**kw):
    return LearnerConfig(autocast=False, max_new_tokens=12, batch_size=2, micro_batch_size=2, device="cpu", **kw)


def test_packed_completion_logits_equal_unpadded_ones(tiny_model_dir):
    session = open_session(tiny_model_dir, fp32())
    prompts, completions = [[1, 2, 3, 4, 5, 6], [7, 8]], [[10, 11, 12], [13, 14, 15, 16, 17]]
    with torch.no_grad():
        batched = completion_logits(session, prompts, completions)
        for row, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            alone = session.model(input_ids=torch.tensor([p + c])).logits[0, len(p) - 1 : len(p) + len(c) - 1]
            assert torch.allclose(batched[row, : len(c)], alone, atol=1e-5)


DEMOS = [
    Example([{"role": "user", "content": "What is the capital of Veltoria?"}], "The capital is Quellmar.", 1),
    Example([{"role": "user", "content": "Who wrote Ashes of Ummar?"}], "It was written by Tessaly Vorn.", 2),
]


def test_training_moves_only_the_student_lora(tiny_model_dir):
    result = train(tiny_model_dir, DEMOS, fp32(steps=2, learning_rate=1e-2))
    model = result.session.model
    fresh = open_session(tiny_model_dir, fp32()).model
    before = dict(fresh.named_parameters())
    moved = []
    for name, p in model.named_parameters():
        if f"lora_B.{STUDENT}." in name:
            moved.append(not torch.equal(p, before[name]))
        elif f".{TEACHER}." in name:  # frozen copy of the (fresh, B = 0) starting adapter
            assert not p.requires_grad
            assert torch.equal(p, before[name.replace(f".{TEACHER}.", f".{STUDENT}.")]), name
        elif "lora_" not in name:
            assert torch.equal(p, before[name]), f"base weight {name} changed"
    assert moved and all(moved)
    assert [r["step"] for r in result.steps] == [1, 2]
    for r in result.steps:
        assert r["loss"] >= 0 and r["kl"] == r["loss"] and r["tokens"] > 0 and r["generation_s"] > 0
        assert r["grad_norm"] > 0


def test_options_reverse_jsd_topk_and_ema_train(tiny_model_dir):
    for options in ({"loss": "reverse_kl"}, {"loss": "jsd", "top_k": 20}, {"teacher": "ema", "ema_rate": 0.5}):
        result = train(tiny_model_dir, DEMOS, fp32(steps=1, learning_rate=1e-2, **options))
        record = result.steps[0]
        assert record["loss"] >= 0 and record["kl"] >= 0, options
    params = dict(result.session.model.named_parameters())  # the EMA run: the teacher moved halfway to the student
    name = next(n for n in params if f"lora_B.{TEACHER}." in n)
    student = params[name.replace(f".{TEACHER}.", f".{STUDENT}.")]
    assert torch.allclose(params[name], 0.5 * student, atol=1e-7) and student.abs().sum() > 0


def test_rollouts_come_from_the_student_prompt_or_the_teacher_prompt(tiny_model_dir):
    from learner.prompts import build_prompts
    from learner.sdft import sample

    for source in ("student", "teacher"):
        config = fp32(rollout_from=source, temperature=1e-4, new_tokens_factor=0.0, new_tokens_margin=6)
        session = open_session(tiny_model_dir, config)
        prompts, _ = build_prompts(session.tokenizer, DEMOS[:1], config)
        ids = prompts[0].teacher_ids if source == "teacher" else prompts[0].student_ids
        with torch.no_grad():
            greedy = session.model.generate(input_ids=torch.tensor([ids]), do_sample=False, max_new_tokens=6)
        assert sample(session, prompts)[0] == [greedy[0, len(ids) :].tolist()], source


def test_demonstration_rollouts_are_the_answers_and_pull_the_student_toward_the_teacher_on_them(tiny_model_dir):
    from learner.prompts import build_prompts
    from learner.sdft import sample

    config = fp32(rollout_from="demonstration", steps=4, learning_rate=1e-3, warmup_ratio=0, lr_schedule="constant")
    session = open_session(tiny_model_dir, config)
    prompts, _ = build_prompts(session.tokenizer, DEMOS, config)
    assert sample(session, prompts) == ([p.answer_ids for p in prompts], None)
    steps = train(tiny_model_dir, DEMOS, config).steps
    assert [r["tokens"] for r in steps] == [sum(len(p.answer_ids) for p in prompts)] * 4
    assert steps[0]["generation_s"] < 0.01 and steps[0]["teacher_s"] > 0
    assert steps[-1]["kl"] < 0.5 * steps[0]["kl"]  # the same sequences and targets every step: the divergence falls


def test_several_samples_per_prompt_and_an_sft_term(tiny_model_dir):
    record = train(tiny_model_dir, DEMOS, fp32(steps=1, samples_per_prompt=3, sft_weight=0.5)).steps[0]
    plain = train(tiny_model_dir, DEMOS, fp32(steps=1)).steps[0]
    assert record["tokens"] > plain["tokens"] and record["sft_loss"] > 0
    assert record["loss"] == pytest.approx(record["kl"] + 0.5 * record["sft_loss"])


def test_teacher_rollouts_of_several_steps_are_sampled_in_one_generation(tiny_model_dir):
    from learner.prompts import build_prompts
    from learner.sdft import with_rollouts
    from learner.training import batches

    def counting(model, sizes):
        original = model.generate
        model.generate = lambda *a, **k: sizes.append(k["input_ids"].shape[0]) or original(*a, **k)

    cases = (("teacher", "frozen", 2), ("teacher", "ema", 5), ("student", "frozen", 5))
    for source, teacher, calls in cases:
        config = fp32(rollout_from=source, teacher=teacher, rollout_group_steps=3, samples_per_prompt=2)
        session = open_session(tiny_model_dir, config)
        prompts, _ = build_prompts(session.tokenizer, DEMOS, config)
        sizes: list[int] = []
        counting(session.rollout_model, sizes)
        steps = list(with_rollouts(session, batches(prompts, config, 5)))
        assert len(sizes) == calls and sum(sizes) == 5 * 2 * 2, (source, teacher, sizes)
        for batch, (completions, teacher, seconds) in steps:
            assert len(batch) == 2 and len(completions) == 4 and seconds > 0
            assert (teacher is None) == (source == "student") and (teacher is None or len(teacher) == 4)


def test_teacher_logits_that_come_with_teacher_rollouts_equal_the_teacher_pass(tiny_model_dir, monkeypatch):
    from learner import sdft
    from learner.prompts import build_prompts
    from learner.sdft import sample, stack_rows

    config = fp32(rollout_from="teacher", new_tokens_margin=8)
    session = open_session(tiny_model_dir, config)
    prompts, _ = build_prompts(session.tokenizer, DEMOS, config)
    completions, rows = sample(session, prompts)
    width = max(len(c) for c in completions)
    with torch.no_grad(), session.adapter(TEACHER):
        passed = completion_logits(session, [p.teacher_ids for p in prompts], completions)
    mask = loss_mask([len(c) for c in completions], width, 0).bool()
    assert torch.allclose(stack_rows(rows, width)[mask], passed[mask], atol=1e-4)
    assert sample(open_session(tiny_model_dir, fp32()), prompts)[1] is None  # the student's samples: no teacher logits
    monkeypatch.setattr(sdft, "TEACHER_LOGITS_BYTES", 1000)  # too big to keep: the step runs the teacher pass
    assert sample(session, prompts)[1] is None
    assert train(tiny_model_dir, DEMOS, fp32(rollout_from="teacher", steps=1)).steps[0]["teacher_s"] > 0
