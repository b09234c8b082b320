"""The KL anchor: its prompt pool is disjoint from the general suite, both methods train with it, and it holds the
student near the live version on prompts without demonstrations (the tiny model, SFT at a high learning rate), or with
anchor_to="base" near the base model, pulling a drifted parent back."""

from __future__ import annotations

import json
import random
import re

import pytest
import torch

from learner.chat import encode_chat
from learner.probes import GENERAL_SUITE
from learner.sdft import divergence
from learner.session import BASE, STUDENT, TEACHER, completion_logits
from learner.training import (
    ANCHOR_PROMPTS,
    NEIGHBOURS_PER_QUESTION,
    anchor_batches,
    anchor_prompts,
    nearest_prompts,
    train,
)
from storage.errors import ApprenticeError
from tests.test_sdft import DEMOS, fp32

COMMON = {"what", "which", "answer", "with", "only", "word", "reply", "into", "name", "does", "give", "many", "that",
          "there", "your", "from", "have", "number"}  # fmt: skip


def _content_words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]{4,}", text.lower())) - COMMON - {"this"}


def test_the_anchor_pool_is_not_the_general_suite():
    suite = [json.loads(line)["messages"][-1]["content"].strip().lower() for line in GENERAL_SUITE.open()]
    pool = [p.lower() for p in anchor_prompts(fp32())]
    assert len(pool) >= 100 and len(set(pool)) == len(pool)
    assert not set(suite) & set(pool), "anchor prompts must not be general-suite probes"
    probe_numbers = {tuple(sorted(re.findall(r"\d+", s))) for s in suite}
    for prompt in pool:  # nor the same question in other words (most of its content words shared with a probe)
        words = _content_words(prompt)
        near = [s for s in suite if len(words) >= 2 and len(words & _content_words(s)) >= max(2, 0.7 * len(words))]
        assert not near, (prompt, near)
        numbers = tuple(sorted(re.findall(r"\d+", prompt)))  # nor a probe's sum in other words (6 times 5, 5 times 6)
        assert not numbers or numbers not in probe_numbers, prompt


def test_anchor_batches_cycle_through_the_pool(tiny_model_dir, tmp_path):
    from learner.model_files import load_tokenizer

    path = tmp_path / "pool.txt"
    path.write_text("one\ntwo\n\nthree\n")
    batches = list(
        anchor_batches(load_tokenizer(tiny_model_dir), fp32(anchor_prompts=str(path), anchor_batch_size=2), 3)
    )
    assert [len(b) for b in batches] == [2, 2, 2]
    assert all(p.student_ids == p.teacher_ids and p.answer_ids == [] for b in batches for p in b)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ApprenticeError, match="holds no prompts"):
        anchor_prompts(fp32(anchor_prompts=str(tmp_path / "empty.txt")))
    assert ANCHOR_PROMPTS.exists()


def test_anchor_nearest_spends_its_share_of_each_batch_on_the_prompts_nearest_the_questions(tiny_model_dir, tmp_path):
    from learner.model_files import load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    path = tmp_path / "pool.txt"
    fillers = [f"Tell me a story number {k}." for k in range(19)]
    path.write_text("\n".join(["What is the capital of Peru?", *fillers]) + "\n")
    config = fp32(anchor_prompts=str(path), anchor_batch_size=4)
    nearest = nearest_prompts(anchor_prompts(config), ["What is the capital of Veltoria?"], random.Random(0))
    assert nearest[0] == "What is the capital of Peru?" and len(nearest) == NEIGHBOURS_PER_QUESTION
    peru = encode_chat(tokenizer, [{"role": "user", "content": nearest[0]}])
    counts = []
    for share in (0.0, 0.5):
        stream = anchor_batches(tokenizer, config.replace(anchor_nearest=share), 8, ["The capital of Veltoria?"])
        batches = [[p.student_ids for p in batch] for batch in stream]
        assert all(len(b) == 4 for b in batches)
        counts.append(sum(b.count(peru) for b in batches))
    # at random Peru is 1 of 20 prompts (32 draws: once or twice); as 1 of 4 neighbours in half of each batch, 4 more
    assert counts[0] <= 2 and counts[1] >= 4, counts
    with pytest.raises(ApprenticeError, match="anchor_nearest"):
        fp32(anchor_nearest=1.5)


def _drift(result, to_base: bool = False) -> float:
    """Mean next-token KL(live version || student), or KL(base || student), over anchor prompts followed by a fixed
    continuation."""
    session = result.session
    texts = anchor_prompts(session.config)[:8]
    batch = next(anchor_batches(session.tokenizer, session.config.replace(anchor_batch_size=8), 1))
    assert len(batch) == len(texts)
    cont = [session.tokenizer("It is a good question.", add_special_tokens=False)["input_ids"]] * len(batch)
    with torch.no_grad():
        student = completion_logits(session, [p.student_ids for p in batch], cont).float().log_softmax(-1)
        with session.model.disable_adapter() if to_base else session.adapter(TEACHER):
            live = completion_logits(session, [p.student_ids for p in batch], cont).float().log_softmax(-1)
    return float(divergence(student, live, "forward_kl").mean())


@pytest.mark.parametrize("method", ["sft", "sdft"])
def test_the_anchor_holds_the_student_near_the_live_version(tiny_model_dir, method):
    # unclipped, so that the anchor's pull is not scaled down with the demonstrations' larger gradient
    common = dict(method=method, steps=6, learning_rate=1e-2, anchor_batch_size=4, anchor_max_new_tokens=6,
                  max_grad_norm=0)  # fmt: skip
    free = train(tiny_model_dir, DEMOS, fp32(**common))
    held = train(tiny_model_dir, DEMOS, fp32(**common, anchor_weight=50.0))
    assert all(r["anchor_kl"] >= 0 for r in held.steps) and "anchor_kl" not in free.steps[0]
    teacher = [p for n, p in held.session.model.named_parameters() if f".{TEACHER}." in n]
    assert teacher and not any(p.requires_grad for p in teacher)
    assert any(f".{STUDENT}." in n for n, _ in held.session.model.named_parameters())
    assert _drift(held) < 0.8 * _drift(free), (_drift(held), _drift(free))


def test_an_anchor_to_the_base_pulls_a_drifted_parent_back(tiny_model_dir, tmp_path):
    parent = tmp_path / "parent"
    train(tiny_model_dir, DEMOS, fp32(method="sft", steps=3, learning_rate=5e-2)).save(parent)
    common = dict(method="sft", steps=6, learning_rate=1e-2, anchor_weight=50.0, anchor_batch_size=4,
                  anchor_max_new_tokens=6, max_grad_norm=0, anchor_from="teacher")  # fmt: skip
    to_live = train(tiny_model_dir, DEMOS, fp32(**common), parent_adapter=str(parent))
    to_base = train(tiny_model_dir, DEMOS, fp32(**common, anchor_to="base"), parent_adapter=str(parent))
    frozen = [p for n, p in to_base.session.model.named_parameters() if f".{BASE}." in n]
    assert frozen and not any(p.requires_grad for p in frozen)
    assert not any(f".{BASE}." in n for n, _ in to_live.session.model.named_parameters())
    assert _drift(to_base, to_base=True) < 0.8 * _drift(to_live, to_base=True), (
        _drift(to_base, to_base=True),
        _drift(to_live, to_base=True),
    )
    with pytest.raises(ApprenticeError, match="anchor_to"):
        fp32(anchor_to="parent")
