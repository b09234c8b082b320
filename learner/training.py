"""The training loop shared by SDFT and SFT: seeded batches of the round's prompts (and of the KL anchor's general
prompts), one step function per method (learner.sdft, learner.sft) on a session (learner.session), the optimizer
step, and the step records.

    result = train(model_dir, examples, config, parent_adapter=None)   # no database needed
    result.save(out_dir)                                              # a peft adapter folder (vLLM loads it)

`learner.rounds.run_round` wraps this with the database, the lease and the atomic version directory;
`learner.parallel.train_parallel` runs it in several processes.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learner import sdft, sft
from learner.chat import encode_chat
from learner.config import LearnerConfig
from learner.model_files import load_tokenizer
from learner.prompts import Example, Prompt, build_prompts
from learner.session import STUDENT, Session, TrainingStopped, open_session, optimizer_step
from storage.errors import ApprenticeError


def batches(prompts: list[Prompt], config: LearnerConfig, steps: int) -> Iterator[list[Prompt]]:
    """`steps` batches of min(batch_size, n) prompts, read from a stream of seeded, reshuffled epochs."""
    rng = random.Random(config.seed)
    size = min(config.batch_size, len(prompts))
    stream: list[Prompt] = []
    for _ in range(steps):
        while len(stream) < size:
            epoch = list(prompts)
            rng.shuffle(epoch)
            stream += epoch
        yield stream[:size]
        stream = stream[size:]


def shard(stream: Iterator[list[Prompt]], rank: int, world: int) -> Iterator[list[Prompt]]:
    """Each batch's share of one data-parallel rank (the whole batch in a one-process round)."""
    for batch in stream:
        yield batch[rank::world]


@dataclass
class TrainResult:
    session: Session
    steps: list[dict[str, Any]]
    metrics: dict[str, Any]
    skipped: list[tuple[int | None, str]]
    used: list[int | None]

    def save(self, out_dir: Path) -> None:
        self.session.save(out_dir)

    @property
    def lora(self) -> dict[str, Any]:
        """The student adapter's peft configuration (a version manifest's "lora")."""
        config = self.session.model.peft_config[STUDENT].to_dict()
        return {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}


def train(
    model_dir: str,
    examples: list[Example],
    config: LearnerConfig,
    *,
    parent_adapter: str | None = None,
    on_step: Callable[[dict[str, Any], float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train on `examples` from `parent_adapter` (None: the base model) with `config.method`; no database.

    `on_step(step_record, progress)` is called after every optimizer step; `should_stop()` True aborts with
    TrainingStopped. Examples that do not fit their budgets are skipped and listed in the result. The same round
    data-parallel in several processes: learner.parallel.train_parallel."""
    import torch

    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train(model_dir, examples, config, parent_adapter, on_step, should_stop)
    finally:
        torch.set_num_threads(threads)


def _train(
    model_dir: str,
    examples: list[Example],
    config: LearnerConfig,
    parent_adapter: str | None,
    on_step: Callable[[dict[str, Any], float], None] | None,
    should_stop: Callable[[], bool] | None,
    rank: int = 0,
    world: int = 1,
) -> TrainResult:
    import torch

    torch.manual_seed(config.seed)
    tokenizer = _tokenizer(model_dir)
    prompts, skipped = build_prompts(tokenizer, examples, config)
    if not prompts:
        raise ApprenticeError("nothing to train on: " + ("; ".join(r for _, r in skipped) or "no demonstrations"))
    total = config.optimizer_steps(len(prompts))
    session = open_session(model_dir, config, parent_adapter=parent_adapter, total_steps=total, rank=rank, world=world)
    if world > 1:
        torch.manual_seed(config.seed + rank)  # the adapter started alike on every rank; the rollouts differ
    work = shard(batches(prompts, config, total), rank, world)
    steps = sdft.with_rollouts(session, work) if config.method == "sdft" else ((b, None) for b in work)
    anchors = None
    if config.anchor_weight > 0:
        questions = [e.messages[-1]["content"] for e in examples if e.messages]  # a demonstration ends on its question
        stream = anchor_batches(tokenizer, config, total, questions)
        anchors = sdft.anchor_rollouts(session, shard(stream, rank, world))
    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    for i, (batch, rollouts) in enumerate(steps, start=1):
        if should_stop is not None and should_stop():
            raise TrainingStopped(f"training stopped after {i - 1} of {total} steps")
        t0 = time.perf_counter()
        lr = session.scheduler.get_last_lr()[0]
        record = sft.sft_step(session, batch) if rollouts is None else sdft.sdft_step(session, batch, rollouts)
        if anchors is not None:
            anchor = sdft.anchor_step(session, *next(anchors))
            record.update(anchor_kl=anchor["anchor_kl"], anchor_s=anchor["anchor_s"])
            record["generation_s"] = record.get("generation_s", 0.0) + anchor["generation_s"]
        record["grad_norm"] = optimizer_step(session)
        if config.method == "sdft" and config.teacher == "ema":
            sdft.ema_update(session)
        generation = rollouts[-1] if rollouts else 0.0  # sampled before t0, by the `steps` generator
        record.update(step=i, lr=lr, seconds=time.perf_counter() - t0 + generation)
        records.append(record)
        if on_step is not None:
            on_step(record, i / total)
    metrics = summarize(records, time.perf_counter() - started)
    metrics.update(examples=len(prompts), skipped=len(skipped))
    return TrainResult(session, records, metrics, skipped, [p.demo_id for p in prompts])


ANCHOR_PROMPTS = Path(__file__).parent / "data" / "anchor_prompts.txt"


def anchor_prompts(config: LearnerConfig) -> list[str]:
    path = Path(config.anchor_prompts) if config.anchor_prompts else ANCHOR_PROMPTS
    if not path.exists():
        raise ApprenticeError(f"anchor prompt file {path} does not exist (learner setting anchor_prompts)")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ApprenticeError(f"anchor prompt file {path} holds no prompts")
    return lines


NEIGHBOURS_PER_QUESTION = 4


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def nearest_prompts(texts: list[str], questions: list[str], rng: random.Random) -> list[str]:
    """The union, over `questions`, of the NEIGHBOURS_PER_QUESTION pool prompts sharing the largest fraction of
    words with each (Jaccard; ties broken by `rng`)."""
    pool = [(text, _words(text)) for text in texts]
    chosen: dict[str, None] = {}
    for question in questions:
        q = _words(question)
        order = sorted(pool, key=lambda item: (-len(q & item[1]) / max(len(q | item[1]), 1), rng.random()))
        chosen.update(dict.fromkeys(text for text, _ in order[:NEIGHBOURS_PER_QUESTION]))
    return list(chosen)


def anchor_batches(
    tokenizer: Any, config: LearnerConfig, steps: int, questions: list[str] | None = None
) -> Iterator[list[Prompt]]:
    """`steps` batches of anchor prompts (a single user turn each; teacher ids = student ids), seeded and cycling;
    with `anchor_nearest`, that fraction of each batch cycles through the pool prompts nearest `questions`."""
    rng = random.Random(config.seed + 1)
    texts = anchor_prompts(config)
    near = nearest_prompts(texts, questions, rng) if config.anchor_nearest > 0 and questions else []
    n_near = round(config.anchor_nearest * config.anchor_batch_size) if near else 0
    streams: list[tuple[list[str], int, list[str]]] = [
        (near, n_near, []),
        (texts, config.anchor_batch_size - n_near, []),
    ]
    for _ in range(steps):
        batch: list[str] = []
        for pool, size, stream in streams:
            while len(stream) < size:
                epoch = list(pool)
                rng.shuffle(epoch)
                stream += epoch
            batch += stream[:size]
            del stream[:size]
        ids = [encode_chat(tokenizer, [{"role": "user", "content": t}]) for t in batch]
        yield [Prompt(i, i, []) for i in ids]


def _tokenizer(model_dir: str) -> Any:

    return load_tokenizer(model_dir)


def summarize(records: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Round metrics from the step records: means, totals and the time split."""
    n = max(len(records), 1)
    out: dict[str, Any] = {"steps": len(records), "seconds": round(seconds, 3), "seconds_per_step": seconds / n}
    for key in ("loss", "kl", "grad_norm", "anchor_kl"):
        values = [r[key] for r in records if r.get(key) is not None]
        if values:
            out[f"{key}_first"], out[f"{key}_last"] = values[0], values[-1]
            out[f"{key}_mean"] = sum(values) / len(values)
    for key in ("generation_s", "teacher_s", "student_s", "anchor_s", "tokens"):
        out[f"{key}_total"] = sum(r.get(key, 0) for r in records)
    return out
