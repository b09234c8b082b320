"""Score a model version on probes: greedy, deterministic, batched; fp32.

A version is the base model plus an optional LoRA adapter folder (peft), merged into a private copy of the base
weights for scoring (generation through the peft wrapper is ~2x slower). Generated probes (exact, contains, regex)
are answered greedily in batches of prompts of similar length with left padding, stopping at the end of turn;
`choice` probes are scored by the log-likelihood of each choice as the start of the assistant reply. Same probes, same
version, same config: same replies and scores, run after run.

    report = evaluate_version(db, model_folder, "v3")        # every skill; stores eval_results
    report.to_json()   # {"version": "v3", "skills": {"general": {"score": 0.41, "n": 305}, ...}}

    .venv/bin/python -m pytest -q tests/test_evaluate.py
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from tqdm import tqdm

from learner.adapters import check_version_adapter
from learner.chat import encode_chat
from learner.model_files import load_model
from learner.probes import GENERAL_SUITE, ProbeSpec, grader_for, load_general_suite
from storage import evals, probes, versions
from storage.errors import ApprenticeError, NotFound
from storage.models import Probe

# Bump when scoring changes meaning (grader rules, choice scoring): stored scores with another method are stale.
METHOD = "greedy-v2"


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = 48  # prompts generated together, sorted by length (CPU: 96 probes 51 s at 16, 37 s at 48)
    max_new_tokens: int = 48  # enough for the suites' short answers; a probe needing more should use another grader
    choice_batch_size: int = 16  # (prompt + choice) sequences per forward pass for `choice` probes
    device: str = "auto"  # auto: cuda when present, else cpu
    general_suite: Path | None = GENERAL_SUITE  # synced into the probes table before scoring; None: leave as is
    progress: bool = False  # tqdm bars on stderr


@dataclass
class ProbeResult:
    probe_id: int | None
    external_id: str | None
    skill: str
    category: str
    grader: str
    answer: str
    reply: str  # the generated reply, or the picked choice for `choice` probes
    correct: bool
    choice_logprobs: dict[str, float] | None = None


@dataclass
class SkillResult:
    score: float
    n: int
    fingerprint: str
    categories: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class EvalReport:
    version: str
    skills: dict[str, SkillResult]
    probes: list[ProbeResult]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """The `apprentice eval --json` document."""
        return {"version": self.version, "skills": {s: {"score": r.score, "n": r.n} for s, r in self.skills.items()}}

    def details(self, skill: str) -> dict[str, Any]:
        """What is stored with the skill's eval_results row."""
        result = self.skills[skill]
        return {
            "fingerprint": result.fingerprint,
            "method": METHOD,
            "categories": result.categories,
            "seconds": round(self.seconds, 2),
            "probes": [asdict(p) for p in self.probes if p.skill == skill],
        }


def spec_from_row(row: Probe) -> ProbeSpec:
    return ProbeSpec(
        skill=row.skill,
        messages=row.messages,
        answer=row.answer,
        grader=row.grader,
        choices=row.choices,
        category=row.category,
        external_id=row.external_id,
        probe_id=row.id,
    )


def fingerprint(specs: list[ProbeSpec], config: EvalConfig) -> str:
    """Identifies a skill's probe set and the scoring settings: equal fingerprints mean comparable scores."""
    items = sorted(
        json.dumps([p.external_id or p.probe_id, p.messages, p.answer, p.grader, p.choices, p.category], sort_keys=True)
        for p in specs
    )
    blob = json.dumps([METHOD, config.max_new_tokens, items], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_version(model_folder: str, adapter_path: str | None, *, device: str = "auto") -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) for the base model with `adapter_path`'s LoRA merged in (None: the base)."""
    import torch

    model, tokenizer = load_model(model_folder, device=pick_device(device), dtype=torch.float32)
    if adapter_path is None:
        return model, tokenizer
    if not (Path(adapter_path) / "adapter_config.json").exists():
        raise ApprenticeError(f"the adapter folder {adapter_path} is missing or has no adapter_config.json")
    from peft import PeftModel

    merged = PeftModel.from_pretrained(model, adapter_path).merge_and_unload()
    return merged.eval(), tokenizer


def end_of_turn_id(tokenizer: Any) -> int:
    """The token the chat template puts right after an assistant reply (`<|im_end|>` in ChatML)."""
    mark = "@@reply-end@@"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": mark}], tokenize=False
    )
    tail = tokenizer(text.split(mark, 1)[1], add_special_tokens=False)["input_ids"]
    return tail[0] if tail else tokenizer.eos_token_id


def stop_ids(model: Any, tokenizer: Any) -> list[int]:
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    return sorted(ids | {tokenizer.eos_token_id, end_of_turn_id(tokenizer)} - {None})


def generate_replies(model: Any, tokenizer: Any, prompts: list[list[int]], config: EvalConfig) -> list[str]:
    """Greedy replies to prompts (token ids), in batches of similar length (ties broken by position)."""
    import torch
    from transformers import GenerationConfig

    gen = GenerationConfig(
        do_sample=False,
        max_new_tokens=config.max_new_tokens,
        eos_token_id=stop_ids(model, tokenizer),
        pad_token_id=tokenizer.pad_token_id,
    )
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    replies = [""] * len(prompts)
    starts = range(0, len(order), config.batch_size)
    for start in tqdm(starts, desc="generating", unit="batch", disable=not config.progress or not prompts):
        rows = order[start : start + config.batch_size]
        ids, mask = _left_padded([prompts[i] for i in rows], tokenizer.pad_token_id, model.device)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)
        for k, i in enumerate(rows):
            replies[i] = tokenizer.decode(out[k, ids.shape[1] :], skip_special_tokens=True).strip()
    return replies


def _left_padded(seqs: list[list[int]], pad: int, device: Any) -> tuple[Any, Any]:
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for k, s in enumerate(seqs):
        ids[k, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[k, width - len(s) :] = 1
    return ids.to(device), mask.to(device)


def continuation_logprobs(
    model: Any, tokenizer: Any, pairs: list[tuple[list[int], list[int]]], config: EvalConfig
) -> list[float]:
    """log p(continuation | prompt) summed over the continuation's tokens, for each (prompt ids, continuation ids).

    Left padding puts every continuation at the end of its row, so only the last positions' logits are computed;
    position ids follow the attention mask so a padded row scores as it would alone."""
    import torch

    order = sorted(range(len(pairs)), key=lambda i: (len(pairs[i][0]) + len(pairs[i][1]), i))
    out = [0.0] * len(pairs)
    starts = range(0, len(order), config.choice_batch_size)
    for start in tqdm(starts, desc="choices", unit="batch", disable=not config.progress or not pairs):
        rows = order[start : start + config.choice_batch_size]
        ids, mask = _left_padded([pairs[i][0] + pairs[i][1] for i in rows], tokenizer.pad_token_id, model.device)
        keep = max(len(pairs[i][1]) for i in rows) + 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
        logp = torch.log_softmax(logits.float(), dim=-1)
        for k, i in enumerate(rows):
            cont = pairs[i][1]
            # logits[:, j] predicts token (width - keep + j + 1); the continuation is the last len(cont) tokens
            predicted = logp[k, keep - 1 - len(cont) : keep - 1]
            target = torch.tensor(cont, device=predicted.device)
            out[i] = predicted.gather(-1, target[:, None]).sum().item()
    return out


def score_probes(
    model: Any, tokenizer: Any, specs: list[ProbeSpec], config: EvalConfig = EvalConfig(), *, version: str = ""
) -> EvalReport:
    """Grade every probe; per-skill score = fraction correct (with per-category scores)."""
    started = time.perf_counter()
    results: list[ProbeResult | None] = [None] * len(specs)
    generated = [i for i, p in enumerate(specs) if grader_for(p.grader).generates]
    prompts = {i: encode_chat(tokenizer, specs[i].messages) for i in range(len(specs))}
    replies = generate_replies(model, tokenizer, [prompts[i] for i in generated], config)
    for i, reply in zip(generated, replies, strict=True):
        results[i] = _result(specs[i], reply, grader_for(specs[i].grader).grade(reply, specs[i].answer))
    _score_choices(model, tokenizer, specs, prompts, results, config)
    done = [r for r in results if r is not None]
    skills = {}
    for skill in sorted({p.skill for p in specs}):
        members = [r for r in done if r.skill == skill]
        skills[skill] = SkillResult(
            score=sum(r.correct for r in members) / len(members),
            n=len(members),
            fingerprint=fingerprint([p for p in specs if p.skill == skill], config),
            categories=_by_category(members),
        )
    return EvalReport(version=version, skills=skills, probes=done, seconds=time.perf_counter() - started)


def _score_choices(
    model: Any,
    tokenizer: Any,
    specs: list[ProbeSpec],
    prompts: dict[int, list[int]],
    results: list[ProbeResult | None],
    config: EvalConfig,
) -> None:
    index, pairs = [], []
    for i, p in enumerate(specs):
        if grader_for(p.grader).generates:
            continue
        for choice in p.choices or []:
            ids = tokenizer(choice, add_special_tokens=False, split_special_tokens=True)["input_ids"]
            index.append((i, choice))
            pairs.append((prompts[i], ids))
    scores: dict[int, dict[str, float]] = defaultdict(dict)
    for (i, choice), lp in zip(index, continuation_logprobs(model, tokenizer, pairs, config), strict=True):
        scores[i][choice] = round(lp, 4)
    for i, per_choice in scores.items():
        best = max(specs[i].choices or [], key=lambda c: per_choice[c])  # first of equals: deterministic
        results[i] = _result(specs[i], best, best == specs[i].answer, per_choice)


def _result(spec: ProbeSpec, reply: str, correct: bool, choice_lp: dict[str, float] | None = None) -> ProbeResult:
    return ProbeResult(
        probe_id=spec.probe_id,
        external_id=spec.external_id,
        skill=spec.skill,
        category=spec.category,
        grader=spec.grader,
        answer=spec.answer,
        reply=reply,
        correct=bool(correct),
        choice_logprobs=choice_lp,
    )


def _by_category(members: list[ProbeResult]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[bool]] = defaultdict(list)
    for r in members:
        groups[r.category or r.grader].append(r.correct)
    return {c: {"score": sum(v) / len(v), "n": len(v)} for c, v in sorted(groups.items())}


def sync_general_suite(db: Engine, path: Path = GENERAL_SUITE) -> probes.WriteCounts:
    """Keep the database's built-in probes equal to the shipped general suite (quick when nothing changed)."""
    items = [_storable(p) for p in load_general_suite(path)]
    return probes.sync_builtin(db, items=items)


def _storable(p: ProbeSpec) -> dict[str, Any]:
    return {
        "skill": p.skill,
        "messages": p.messages,
        "answer": p.answer,
        "grader": p.grader,
        "choices": p.choices,
        "category": p.category,
        "external_id": p.external_id,
    }


def evaluate_version(
    db: Engine,
    model_folder: str,
    version: str,
    *,
    skills: list[str] | None = None,
    config: EvalConfig = EvalConfig(),
    record: bool = True,
) -> EvalReport:
    """Score `version` on every skill (or only `skills`) and store the results; raises NotFound for an unknown
    version or a skill without probes."""
    if config.general_suite is not None:
        sync_general_suite(db, config.general_suite)
    row = versions.get_version(db, name=version)
    specs = [spec_from_row(p) for p in probes.list_probes(db, skills=skills)]
    missing = sorted(set(skills or []) - {p.skill for p in specs})
    if missing:
        raise NotFound(f"no probes for skill {', '.join(map(repr, missing))}; see `apprentice import --kind probes`")
    if not specs:
        raise NotFound("there are no probes to evaluate on; import some with `apprentice import --kind probes`")
    check_version_adapter(version, row.adapter_path, row.checksum)  # a damaged adapter is not scored (or promoted)
    model, tokenizer = load_version(model_folder, row.adapter_path, device=config.device)
    report = score_probes(model, tokenizer, specs, config, version=version)
    if record:
        evals.record_eval(
            db,
            version=version,
            skills={s: {"score": r.score, "n": r.n, "details": report.details(s)} for s, r in report.skills.items()},
        )
    return report
