"""How sure is the teacher (the base model with the demonstration in its context, the builtin preset's template) of
the demonstration's tokens, next to the student (no demonstration), and do its rollouts at temperature 0.7 carry the
fact? Round-1 facts of `bench lifelong`, as run 2026-12-03:

    PYTHONPATH=TREE python teacher.py [N_FACTS]"""

import sys
from pathlib import Path
from typing import Any

import torch

from app.bench.lifelong import LifelongOptions, prepare
from app.services import model_folder
from app.settings import Settings
from learner.config import CONTEXT_FIRST_TEMPLATE
from learner.model_files import load_model
from learner.prompts import teacher_messages

torch.set_num_threads(1)
folder = model_folder(Settings())
options = LifelongOptions(model_dir=folder, out_dir=Path("/tmp/teacher-diag"), methods=["sdft"], seeds=[0])
run = prepare(options)
model, tok = load_model(folder)


def ids(messages: list[dict[str, str]]) -> list[int]:
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tok(text, add_special_tokens=False)["input_ids"]


def answer_probs(prompt: list[int], answer: list[int]) -> tuple[list[float], float]:
    """p of each answer token given the ones before it, and the share of them that are the argmax."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + answer])).logits[0, len(prompt) - 1 : -1].float()
    p = logits.softmax(-1).gather(-1, torch.tensor(answer).unsqueeze(-1)).squeeze(-1)
    return [round(float(v), 2) for v in p], float((logits.argmax(-1) == torch.tensor(answer)).float().mean())


def reply(prompt: list[int], n: int, **sampling: Any) -> list[str]:
    out = model.generate(torch.tensor([prompt] * n), max_new_tokens=48, pad_token_id=tok.pad_token_id, **sampling)
    return [tok.decode(row[len(prompt) :], skip_special_tokens=True).replace("\n", " ")[:200] for row in out]


torch.manual_seed(0)
for fact in run.taught[: int(sys.argv[1]) if len(sys.argv) > 1 else 6]:
    student = ids(fact.messages)
    teacher = ids(teacher_messages(fact.messages, fact.answer, CONTEXT_FIRST_TEMPLATE))
    answer = tok(fact.answer, add_special_tokens=False)["input_ids"]
    print("=" * 100, "\nQ:", fact.messages[-1]["content"], "| A:", fact.answer)
    print("tokens   ", [tok.decode([i]) for i in answer])
    print("teacher p", *answer_probs(teacher, answer))
    print("student p", *answer_probs(student, answer))
    for text in reply(teacher, 4, do_sample=True, temperature=0.7, top_p=1.0, top_k=0):
        print("  teacher sample>", text)
    print("  student greedy>", reply(student, 1, do_sample=False)[0])
