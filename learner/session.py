"""A training session: the base model with a trainable LoRA adapter ("default", the student) and, for SDFT or the KL
anchor, a frozen "teacher" adapter beside it, an optional merged copy of the weights to sample from, the AdamW
optimizer with warm-up and decay, the device and dtype rules, the data-parallel sums, and the forward pass that
scores completions. The step functions (learner.sdft, learner.sft) and the loop (learner.training) work on it.

Lifelong semantics: with `parent_adapter` (the live version's adapter), the student continues that adapter and the
teacher is an exact, frozen copy of it, so round k's teacher is the live version (base + rounds 1..k-1), not the
original base. Without a parent (the live version is the base model) both start from a fresh LoRA whose B is zero,
so the teacher equals the base model.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from learner.config import LearnerConfig
from learner.model_files import load_model
from learner.prompts import end_of_turn_id
from storage.errors import ApprenticeError

TEACHER = "teacher"
BASE = "base"  # a frozen adapter that changes nothing (B = 0): the base model, for an anchor with anchor_to="base"
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
        return [p for _, p in self.student_named_parameters()]

    def student_named_parameters(self) -> list[tuple[str, Any]]:
        return [(n, p) for n, p in self.model.named_parameters() if f".{STUDENT}." in n and "lora_" in n]

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
    if config.anchor_weight > 0 and config.anchor_to == "base":
        _add_base(model)
    if rollout_model is not None:
        session.merge_pairs = _merge_pairs(model, rollout_model)
        if not session.merge_pairs:
            session.rollout_model = None  # an adapter shape we cannot merge by hand: generate through peft
    model.train()
    named = session.student_named_parameters()
    assert named and all(p.requires_grad for _, p in named), "the student adapter must be trainable"
    lr = config.learning_rate
    a_lr = lr * (config.parent_a_lr_factor if parent_adapter else 1.0)
    groups = [
        {"params": [p for n, p in named if "lora_A" not in n]},
        {"params": [p for n, p in named if "lora_A" in n], "lr": a_lr},
    ]
    session.optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=config.weight_decay, eps=config.adam_eps)
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


def _add_base(model: Any) -> None:
    """A frozen adapter "base" whose B matrices are zero: with it active the model is the base model."""
    import torch

    model.add_adapter(BASE, copy.deepcopy(model.peft_config[STUDENT]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if f".{BASE}." in name:
                if "lora_B" in name:
                    p.zero_()
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


def pack(prompts: list[list[int]], completions: list[list[int]], pad_id: int, device: Any) -> dict[str, Any]:
    """Left-padded prompts followed by right-padded completions, so completion token j of every row sits at the same
    column; with `logits_to_keep = C + 1`, logits[:, :-1] are the (B, C, V) predictions of the completion tokens."""
    import torch

    width_p = max(len(p) for p in prompts)
    width_c = max(max(len(c) for c in completions), 1)
    ids, mask = [], []
    for p, c in zip(prompts, completions, strict=True):
        left, right = width_p - len(p), width_c - len(c)
        ids.append([pad_id] * left + p + c + [pad_id] * right)
        mask.append([0] * left + [1] * (len(p) + len(c)) + [0] * right)
    input_ids = torch.tensor(ids, device=device)
    attention = torch.tensor(mask, device=device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": input_ids, "attention_mask": attention, "position_ids": positions, "width_c": width_c}


def completion_logits(session: Session, prompts: list[list[int]], completions: list[list[int]]) -> Any:
    """(B, C, V) logits of the active adapter predicting each completion token after its prompt."""
    batch = pack(prompts, completions, session.tokenizer.pad_token_id, session.device)
    width_c = batch.pop("width_c")
    with session.forward_context():
        logits = session.model(**batch, logits_to_keep=width_c + 1, use_cache=False).logits
    return logits[:, :-1]
