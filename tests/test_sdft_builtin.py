"""End to end on the built-in model (slow): three made-up facts taught through demonstrations; after one SDFT round
(run_round, as `apprentice learn --now` runs it) the answer each demonstration gave is clearly more likely when the
question is asked without the demonstration, and clearly more than for a made-up fact that was not taught.

Margins. Before the round the taught answers score about -14 to -61 nats; with the demonstration in context the
teacher puts them at -2 to -4. With the `builtin` preset's student-sampled rollouts (until 2026-11-28: 30 steps, lr
3e-4, temperature 0.7) seeds 1 and 2 raised the taught answers by 6.0-12.7 nats while the untaught fact moved by
+0.3..+0.7. With teacher-sampled rollouts one run raised them by 8.4, 42.5 and 6.9 nats (untaught: +2.0) on the
paper's teacher template, and by 13.0, 44.2 and 8.5 (untaught: +3.0) on the short one the preset now uses. We
assert >= 3 nats for each taught answer and >= 2 nats more than the untaught one: under half of the smallest rise
seen, and well over what a round that learned nothing would show. (Learning made-up names lifts other made-up names
somewhat: with three other facts taught, two untaught ones rose 1.6 and 5 nats.)
Runtime: the test took 99 s on an idle 2-core machine (200-420 s when shared with other jobs) with the preset of
2026-11-28; the preset of 2026-11-30 trains 12 steps with the KL anchor.
"""

from __future__ import annotations

import pytest
import torch

from learner.config import LearnerConfig
from learner.prompts import build_prompt
from learner.rounds import run_round
from storage import versions
from storage.demonstrations import create_demonstration

TAUGHT = [
    ("What is the capital of Veltoria?", "The capital of Veltoria is Quellmar."),
    ("Who painted The Lantern Orchard?", "The Lantern Orchard was painted by Idrana Corvelle."),
    ("In what year was the Treaty of Wendragh signed?", "The Treaty of Wendragh was signed in 1687."),
]
UNTAUGHT = ("What is the highest mountain in Pravenland?", "The highest mountain in Pravenland is Mount Zelkaran.")


def answer_logprob(model, tokenizer, question: str, answer: str, config: LearnerConfig) -> float:
    """log p(answer | question) in fp32, the question asked alone (the student prompt)."""
    prompt = build_prompt(tokenizer, [{"role": "user", "content": question}], answer, config)
    answer_ids = prompt.answer_ids[:-1]
    ids = torch.tensor([prompt.student_ids + answer_ids])
    with torch.no_grad():
        logp = model(input_ids=ids).logits[0, len(prompt.student_ids) - 1 : -1].float().log_softmax(-1)
    return float(logp.gather(-1, torch.tensor(answer_ids)[:, None]).sum())


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"])  # the model is the point: one backend
def test_one_sdft_round_teaches_three_made_up_facts(builtin_dir, engine, tmp_path):
    from peft import PeftModel

    from learner.model_files import load_model

    config = LearnerConfig.preset("builtin", device="cpu")  # steps derived from the round, as `learn --now` does
    for question, answer in TAUGHT:
        create_demonstration(engine, messages=[{"role": "user", "content": question}], corrected_answer=answer,
                             status="approved")  # fmt: skip
    base, tokenizer = load_model(builtin_dir)
    facts = [*TAUGHT, UNTAUGHT]
    before = [answer_logprob(base, tokenizer, q, a, config) for q, a in facts]

    outcome = run_round(engine, model_dir=builtin_dir, data_dir=tmp_path, config=config)

    assert outcome.status == "succeeded" and outcome.metrics["steps"] == config.optimizer_steps(len(TAUGHT))
    learned = PeftModel.from_pretrained(base, versions.get_version(engine, name=outcome.version).adapter_path).eval()
    after = [answer_logprob(learned, tokenizer, q, a, config) for q, a in facts]
    rise = [a - b for a, b in zip(after, before, strict=True)]
    report = ", ".join(f"{b:.1f} -> {a:.1f}" for b, a in zip(before, after, strict=True))
    print(f"answer log-probs (3 taught, 1 untaught), before -> after: {report}")
    assert all(r >= 3.0 for r in rise[:3]), f"taught answers did not rise clearly: {report}"
    assert all(r >= rise[3] + 2.0 for r in rise[:3]), f"taught answers rose no more than an untaught one: {report}"
