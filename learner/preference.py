"""Did a round learn its demonstrations? How strongly a version prefers each corrected answer over the reply it
replaced, by mean per-token log-probability after the demonstration's conversation (no demonstration in context).

The gate (learner.gate) compares the candidate with the live version on the round's own demonstrations: a round that
learned something prefers more corrections than the live version did. Per-token means, not sums: a short correction
must not win over a long original reply just by being short.

    rows = round_pairs(db, round_id)                        # [(messages, corrected, original), ...]
    prefs = preferences(model_folder, adapter_path, rows)       # [Preference(corrected=-0.8, original=-1.9), ...]
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from learner.chat import encode_chat
from learner.evaluate import EvalConfig, continuation_logprobs, end_of_turn_id, load_version
from storage import demonstrations, rounds


@dataclass(frozen=True)
class Preference:
    corrected: float  # mean log-prob per token of the corrected answer (and its end of turn)
    original: float | None  # the same for the original reply; None when the demonstration has none

    @property
    def prefers_correction(self) -> bool:
        return self.original is not None and self.corrected > self.original


def round_pairs(db: Engine, round_id: int) -> list[tuple[list[dict[str, str]], str, str]]:
    """(conversation, corrected answer as the round trained on it, original reply) of the round's new demonstrations
    (replayed ones are left out: they were learned before)."""
    learned = [r for r in rounds.round_demonstrations(db, round_id=round_id) if not r.replay]
    demos = {d.id: d for d in demonstrations.get_demonstrations(db, ids=[r.demonstration_id for r in learned])}
    out = []
    for r in learned:
        demo = demos.get(r.demonstration_id)
        if demo is not None:
            original = demo.original_answer.strip()
            answer = r.answer or demo.corrected_answer
            out.append((demo.messages, answer, "" if original == answer.strip() else original))
    return out


def preferences(
    model_folder: str, adapter_path: str | None, pairs: list[tuple[list[dict[str, str]], str, str]]
) -> list[Preference]:
    """Each pair's mean per-token log-probs under the base model plus `adapter_path` (scored in fp32)."""

    if not pairs:
        return []
    model, tokenizer = load_version(model_folder, adapter_path)
    eot = end_of_turn_id(tokenizer)
    items: list[tuple[list[int], list[int]]] = []
    for messages, corrected, original in pairs:
        prompt = encode_chat(tokenizer, messages)
        for text in (corrected, original):
            if text:
                ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
                items.append((prompt, ids + [eot]))
    sums = iter(continuation_logprobs(model, tokenizer, items, EvalConfig(choice_batch_size=8)))
    lengths = iter(len(ids) for _, ids in items)
    out = []
    for _, _, original in pairs:
        corrected = next(sums) / next(lengths)
        out.append(Preference(corrected, next(sums) / next(lengths) if original else None))
    return out


@dataclass(frozen=True)
class LearnedCheck:
    """The candidate against the live version on the round's demonstrations."""

    n: int  # demonstrations with an original reply to compare against
    live: int  # of those, how many the live version prefers the correction on
    candidate: int
    live_logp: float  # mean per-token log-prob of the corrections (all demonstrations)
    candidate_logp: float
    passed: bool

    def describe(self) -> str:
        gain = f"correction log-prob per token {self.live_logp:.2f} -> {self.candidate_logp:.2f}"
        if not self.n:
            return gain
        return f"prefers the correction on {self.candidate} of {self.n} (live: {self.live}); {gain}"


def learned_check(live: list[Preference], candidate: list[Preference], min_gain: float) -> LearnedCheck:
    """Passed when the candidate prefers more corrections than the live version; when the live version already
    preferred them all (or no demonstration has an original reply), when the corrections' mean per-token log-prob
    rose by at least `min_gain` nats."""
    assert len(live) == len(candidate), "both versions score the same demonstrations"
    n = sum(p.original is not None for p in live)
    live_n = sum(p.prefers_correction for p in live)
    cand_n = sum(p.prefers_correction for p in candidate)
    live_lp = sum(p.corrected for p in live) / max(len(live), 1)
    cand_lp = sum(p.corrected for p in candidate) / max(len(candidate), 1)
    if not live:
        passed = True  # nothing to compare (a version no round made)
    elif n and live_n < n:
        passed = cand_n > live_n
    else:
        passed = cand_lp - live_lp >= min_gain
    return LearnedCheck(n, live_n, cand_n, live_lp, cand_lp, passed)


def round_learned(
    db: Engine, model_folder: str, *, round_id: int, live_adapter: str | None, candidate_adapter: str | None,
    min_gain: float,
) -> LearnedCheck:  # fmt: skip
    pairs = round_pairs(db, round_id)
    live = preferences(model_folder, live_adapter, pairs)
    return learned_check(live, preferences(model_folder, candidate_adapter, pairs), min_gain)
