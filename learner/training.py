"""The training loop shared by SDFT and SFT: one base model with a trainable LoRA adapter ("default", the student),
for SDFT a frozen "teacher" adapter beside it, an AdamW optimizer with warm-up and decay, and the step loop.

Lifelong semantics: with `parent_adapter` (the live version's adapter), the student continues that adapter and the
teacher is an exact, frozen copy of it, so round k's teacher is the live version (base + rounds 1..k-1), not the
original base. Without a parent (the live version is the base model) both start from a fresh LoRA whose B is zero,
so the teacher equals the base model.

    result = train(model_dir, examples, config, parent_adapter=None)   # no database needed
    result.save(out_dir)                                              # a peft adapter folder (vLLM loads it)

`learner.rounds.run_round` wraps this with the database, the lease and the atomic version directory.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from learner.config import LearnerConfig
from learner.prompts import Example, Prompt, build_prompts, end_of_turn_id
from storage.errors import ApprenticeError

TEACHER = "teacher"
STUDENT = "default"  # peft's default name: save_pretrained then writes the adapter at the folder's top level


class TrainingStopped(ApprenticeError):
    """Training was asked to stop (the round lost its lease, or the caller cancelled)."""


@dataclass
class Session:
    """Everything a step needs: model (peft, two adapters), rollout copy, tokenizer, optimizer, device."""

    model: Any
    tokenizer: Any
    config: LearnerConfig
    device: Any
    autocast: bool
    eot_id: int
    rollout_model: Any = None
    merge_pairs: list[tuple[Any, Any]] = field(default_factory=list)
    optimizer: Any = None
    scheduler: Any = None
    rank: int = 0  # this process's place in a data-parallel round (learner.parallel); 0 of 1 otherwise
    world: int = 1

    def total(self, value: float) -> float:
        """`value` summed over the data-parallel ranks (itself in a one-process round)."""
        return value if self.world == 1 else all_sum(value, self.device)

    def forward_context(self) -> contextlib.AbstractContextManager:
        import torch

        if self.autocast:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def adapter(self, name: str) -> Iterator[None]:
        """Run the enclosed forward passes with adapter `name`; the student is active (and trainable) again after."""
        if name == STUDENT:
            yield
            return
        self.model.base_model.set_adapter(name, inference_mode=True)
        try:
            yield
        finally:
            self.model.base_model.set_adapter(STUDENT)

    def student_parameters(self) -> list[Any]:
        return [p for n, p in self.model.named_parameters() if f".{STUDENT}." in n and "lora_" in n]

    def save(self, out_dir: Path) -> None:
        """The student adapter as a peft folder (adapter_config.json + adapter_model.safetensors)."""
        self.model.save_pretrained(str(out_dir), selected_adapters=[STUDENT])


def all_sum(value: float, device: Any) -> float:
    """A number summed over the ranks of the initialized process group (every rank must call it)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def sync_gradients(params: list[Any]) -> None:
    """Sum the ranks' gradients (each rank's loss is already divided by the whole batch's count)."""
    import torch
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    at = 0
    for p in params:
        p.grad = flat[at : at + p.numel()].view_as(p)
        at += p.numel()


def fast_cpu_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 / AMX). Without it, bf16 matmuls are emulated: on
    an AVX2-only EPYC a 256x576x1536 bf16 matmul took 38x as long as fp32, so autocast would slow training down."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def weight_dtype(config: LearnerConfig) -> Any:
    """The training weights' dtype, the same on every device: float32 unless the config says bfloat16."""
    import torch

    return torch.bfloat16 if config.dtype == "bfloat16" else torch.float32


def resolve_device(config: LearnerConfig) -> tuple[Any, Any, bool]:
    """(device, weight dtype, bf16 autocast?) from the config. Weights are float32 unless the config says bfloat16,
    on CUDA too: with bf16 weights continuing rounds collapsed on an H200 while float32 held (what differs is in
    bench/results/lifelong/README.md). Autocast runs the passes in bf16 on a CPU that computes it natively."""
    import torch

    name = config.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ApprenticeError("learner config asks for device cuda, but torch sees no CUDA device")
    device = torch.device(name)
    dtype = weight_dtype(config)
    autocast = device.type == "cpu" and dtype == torch.float32 and config.autocast and fast_cpu_bf16()
    return device, dtype, autocast


def open_session(
    model_dir: str, config: LearnerConfig, *, parent_adapter: str | None = None, total_steps: int = 1,
    rank: int = 0, world: int = 1,
) -> Session:  # fmt: skip
    """Load the base model, the student (parent adapter or fresh LoRA), the teacher copy and the optimizer."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    from learner.model_files import load_model

    device, dtype, autocast = resolve_device(config)
    base, tokenizer = load_model(model_dir, device=str(device), dtype=dtype)
    rollout_model = None
    teacher = config.method == "sdft" or config.anchor_weight > 0
    if teacher and config.merged_rollouts:
        # bf16 when the passes run under autocast: autocast would re-cast every weight for every generated token
        rollout_model = copy.deepcopy(base).to(torch.bfloat16 if autocast else dtype)
    if parent_adapter:
        model = PeftModel.from_pretrained(base, parent_adapter, adapter_name=STUDENT, is_trainable=True)
    else:
        torch.manual_seed(config.seed)  # the fresh adapter's A matrices: reproducible from the seed
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.lora_targets),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(base, lora)
    session = Session(model, tokenizer, config, device, autocast, end_of_turn_id(tokenizer), rollout_model)
    session.rank, session.world = rank, world
    if teacher:
        _add_teacher(model)
    if rollout_model is not None:
        session.merge_pairs = _merge_pairs(model, rollout_model)
        if not session.merge_pairs:
            session.rollout_model = None  # an adapter shape we cannot merge by hand: generate through peft
    model.train()
    params = session.student_parameters()
    assert params and all(p.requires_grad for p in params), "the student adapter must be trainable"
    session.optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    session.scheduler = torch.optim.lr_scheduler.LambdaLR(session.optimizer, _lr_lambda(config, total_steps))
    return session


def _add_teacher(model: Any) -> None:
    """A frozen adapter "teacher" with the student's exact starting weights."""
    import torch

    model.add_adapter(TEACHER, copy.deepcopy(model.peft_config[STUDENT]))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in params.items():
            if f".{TEACHER}." in name:
                p.copy_(params[name.replace(f".{TEACHER}.", f".{STUDENT}.")])
                p.requires_grad_(False)
    model.base_model.set_adapter(STUDENT)


def _merge_pairs(model: Any, rollout_model: Any) -> list[tuple[Any, Any]]:
    """(peft LoRA layer, same linear in the rollout copy) for every adapted module; [] if not plain LoRA."""
    cfg = model.peft_config[STUDENT]
    if getattr(cfg, "use_dora", False) or getattr(cfg, "fan_in_fan_out", False):
        return []
    plain = dict(rollout_model.named_modules())
    pairs = []
    for name, module in model.base_model.model.named_modules():
        if hasattr(module, "lora_A") and STUDENT in module.lora_A:
            pairs.append((module, plain[name]))
    return pairs


def refresh_rollout_model(session: Session, name: str = STUDENT) -> Any:
    """The model to sample from: the rollout copy with W = W_base + scaling * B @ A of adapter `name` as it is now
    (None: generate through peft with `name` active)."""
    import torch

    if session.rollout_model is None:
        return None
    with torch.no_grad():
        for lora, linear in session.merge_pairs:
            base = lora.base_layer.weight
            a, b = lora.lora_A[name].weight.to(base.dtype), lora.lora_B[name].weight.to(base.dtype)
            linear.weight.copy_(torch.addmm(base, b, a, alpha=lora.scaling[name]))
    return session.rollout_model


def _lr_lambda(config: LearnerConfig, total: int) -> Callable[[int], float]:
    warmup = math.ceil(config.warmup_ratio * total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if config.lr_schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if config.lr_schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def optimizer_step(session: Session) -> float:
    """Clip, step, schedule, zero; returns the gradient norm before clipping."""
    import torch

    params = session.student_parameters()
    if session.world > 1:
        sync_gradients(params)
    max_norm = session.config.max_grad_norm or float("inf")
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    session.optimizer.step()
    session.scheduler.step()
    session.optimizer.zero_grad(set_to_none=True)
    return float(norm)


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

    from learner import sdft, sft

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
        anchors = sdft.anchor_rollouts(session, shard(anchor_batches(tokenizer, config, total), rank, world))
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


def anchor_batches(tokenizer: Any, config: LearnerConfig, steps: int) -> Iterator[list[Prompt]]:
    """`steps` batches of anchor prompts (a single user turn each; teacher ids = student ids), seeded and cycling."""
    from learner.chat import encode_chat

    rng = random.Random(config.seed + 1)
    texts = anchor_prompts(config)
    stream: list[str] = []
    for _ in range(steps):
        while len(stream) < config.anchor_batch_size:
            epoch = list(texts)
            rng.shuffle(epoch)
            stream += epoch
        batch, stream = stream[: config.anchor_batch_size], stream[config.anchor_batch_size :]
        ids = [encode_chat(tokenizer, [{"role": "user", "content": t}]) for t in batch]
        yield [Prompt(i, i, []) for i in ids]


def _tokenizer(model_dir: str) -> Any:
    from learner.model_files import load_tokenizer

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
