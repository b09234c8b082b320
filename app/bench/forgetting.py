"""What a trained version forgot, and what its teacher taught besides the facts: the evidence in
bench/results/README.md ("Why SDFT falls short"). Usage, from the repository root:

    python -m app.bench.forgetting versions NAME=ADAPTER_DIR ...  # general suite per category, length, phrase count
    python -m app.bench.forgetting rollouts TEMPLATE ...           # teacher rollouts per template: phrase, length

`base` as ADAPTER_DIR is the base model. The sequential rounds' adapters of a `bench learn` run are kept under
OUT/cache/<fingerprint>/adapters/. The phrase is "the (correct) answer is", which the default teacher template holds.
"""

from __future__ import annotations

import re
import statistics
import sys
from collections import defaultdict

import torch

from app.bench.facts import load_facts
from learner.chat import encode_chat
from learner.evaluate import EvalConfig, load_version, score_probes
from learner.model_files import BUILTIN, default_cache_dir, resolve_model
from learner.probes import load_general_suite
from learner.prompts import teacher_messages

PHRASE = re.compile(r"\bthe (correct )?answer is\b", re.I)


def versions(pairs: list[str]) -> None:
    specs = load_general_suite()
    config = EvalConfig(batch_size=48, choice_batch_size=48, max_new_tokens=48)
    for pair in pairs:
        name, adapter = pair.split("=", 1)
        model, tokenizer = load_version(
            resolve_model(BUILTIN, default_cache_dir()), None if adapter == "base" else adapter
        )
        right, lengths, phrase = defaultdict(list), defaultdict(list), 0
        for spec, result in zip(specs, score_probes(model, tokenizer, specs, config).probes, strict=True):
            right[spec.category].append(result.correct)
            if spec.grader != "choice":
                lengths[spec.category].append(len(tokenizer(result.reply)["input_ids"]))
                phrase += bool(PHRASE.search(result.reply))
        cells = [
            f"{c} {100 * sum(v) / len(v):.1f}% ({statistics.mean(lengths[c]):.0f} tokens)" for c, v in right.items()
        ]
        print(f"{name}: {'; '.join(cells)}; the phrase in {phrase} of {sum(map(len, lengths.values()))} replies")


def rollouts(templates: list[str], samples: int = 4, temperature: float = 0.7) -> None:
    model, tokenizer = load_version(resolve_model(BUILTIN, default_cache_dir()), None)
    facts = load_facts()
    for template in templates:
        template = template.replace("\\n", "\n")
        torch.manual_seed(0)
        phrase = keyword = 0
        lengths = []
        for f in facts:
            ids = encode_chat(tokenizer, teacher_messages(f.messages, f.answer, template))
            out = model.generate(torch.tensor([ids]), do_sample=True, temperature=temperature, max_new_tokens=40,
                                 num_return_sequences=samples)  # fmt: skip
            for seq in out:
                new = seq[len(ids) :]
                text = tokenizer.decode(new, skip_special_tokens=True)
                phrase += bool(PHRASE.search(text))
                keyword += f.direct[0].answer.lower() in text.lower()
                lengths.append(int((new != tokenizer.pad_token_id).sum()))
        n = len(lengths)
        print(f"{template!r}: {n} rollouts; the phrase in {phrase}, the answer keyword in {keyword}, "
              f"{statistics.mean(lengths):.1f} tokens on average")  # fmt: skip


if __name__ == "__main__":
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    {"versions": versions, "rollouts": rollouts}[sys.argv[1]](sys.argv[2:])
