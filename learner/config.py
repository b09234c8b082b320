"""LearnerConfig: every knob of a training round (LoRA, optimizer, rollouts, loss, prompts, device), each with a
default and a help text, plus presets for the built-in 135M model and for ~4B models.

    config = LearnerConfig.preset("builtin", learning_rate=1e-4)   # preset, then explicit overrides
    config = LearnerConfig.from_dict({"method": "sft", "steps": 20})
    config.to_dict()                                                # JSON-able, stored with every round

Defaults follow the SDFT paper (forward KL, temperature 1.0, first 3 tokens skipped, frozen teacher) except where
LoRA needs a higher learning rate than the paper's full fine-tuning. Validation happens once, in `__post_init__`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from storage.errors import ApprenticeError

# The official SDFT code's teacher prompt: the last user turn becomes this, with the demonstration in it.
PAPER_TEACHER_TEMPLATE = (
    "{question}\n\nThis is an example for a response to the question:\n{demonstration}\n\n"
    "Now answer with a response of your own, including the thinking process."
)
# For small models, whose teacher rambles on the paper's prompt: the demonstration as the answer, then stop.
SHORT_TEACHER_TEMPLATE = "{question}\n\nThe correct answer is: {demonstration}\n\nAnswer the question in one sentence."
# The demonstration first, then the question, with no phrase to copy: the short template's "The correct answer is:"
# turned up in 43% of general replies after three sequential rounds (bench/results/README.md).
CONTEXT_FIRST_TEMPLATE = "{demonstration}\n\n{question} Answer in one sentence."
LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
METHODS = ("sdft", "sft")
LOSSES = ("forward_kl", "reverse_kl", "jsd")
ROLLOUT_SOURCES = ("student", "teacher", "demonstration")


def _f(default: Any, help: str, **kw: Any) -> Any:  # noqa: A002 - mirrors TRL's metadata={"help": ...}
    if isinstance(default, list | dict | tuple):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class LearnerConfig:
    # --- what to train -------------------------------------------------------------------------------------------
    method: str = _f("sdft", "sdft (self-distillation, the default) or sft (plain next-token loss on the answer).")
    # --- LoRA (a round that continues a parent adapter keeps the parent's r/alpha/targets) -------------------------
    lora_r: int = _f(16, "LoRA rank.")
    lora_alpha: int = _f(32, "LoRA alpha (the update is scaled by alpha / r).")
    lora_dropout: float = _f(0.0, "Dropout on the LoRA input. 0 keeps student and rollout policy identical.")
    lora_targets: list[str] = _f(list(LLAMA_TARGETS), "Module names that get LoRA (attention and MLP projections).")
    # --- optimizer ---------------------------------------------------------------------------------------------
    learning_rate: float = _f(
        2e-4, "AdamW peak learning rate (LoRA wants ~1e-4..3e-4; the paper's 5e-6..5e-5 is for full fine-tuning)."
    )
    weight_decay: float = _f(0.0, "AdamW weight decay on the LoRA weights.")
    adam_eps: float = _f(
        1e-8,
        "AdamW epsilon. Below the gradients' size every step moves each weight by about the learning rate; near it "
        "(the built-in model's clipped LoRA gradients are ~5e-4 per weight) weights with small gradients move less.",
    )
    parent_a_lr_factor: float = _f(
        1.0,
        "Learning-rate factor for LoRA's A matrices when a round continues a parent adapter. A fresh adapter's B "
        "starts at zero, so its A barely acts at first; a trained B makes every step of A count (0 freezes A).",
    )
    lr_schedule: str = _f("cosine", "cosine | linear | constant, after the warm-up.")
    warmup_ratio: float = _f(0.1, "Fraction of the optimizer steps spent warming up linearly from 0.")
    max_grad_norm: float = _f(1.0, "Gradient clipping (the paper: 1.0). 0 disables it.")
    steps: int = _f(0, "Optimizer steps of a round; 0 derives them from epochs (at least min_steps).")
    epochs: float = _f(
        4.0, "Passes over the round's demonstrations when steps is 0 (the paper: 2 for skills, 4 for knowledge)."
    )
    min_steps: int = _f(8, "Lower bound on derived steps, so a round with a handful of demonstrations still learns.")
    batch_size: int = _f(8, "Prompts per optimizer step (one rollout each); fewer when the round has fewer demos.")
    micro_batch_size: int = _f(8, "Prompts per forward/backward pass (gradients are accumulated up to batch_size).")
    seed: int = _f(0, "Seed for demonstration order and sampling.")
    # --- rollouts (SDFT) -----------------------------------------------------------------------------------------
    temperature: float = _f(
        1.0,
        "Sampling temperature of the student's rollouts; logits are divided by it in the loss too (the paper: 1.0).",
    )
    teacher_temperature: float = _f(
        0.0,
        "Temperature of the teacher's logits in the demonstrations' loss; 0 = the same as temperature. Below it the "
        "targets are sharpened: the student is pulled toward the teacher's most likely tokens (argmax unchanged). "
        "The KL anchor always uses temperature.",
    )
    top_p: float = _f(1.0, "Nucleus sampling of the rollouts (the paper: 1.0, i.e. off).")
    max_new_tokens: int = _f(256, "Hard cap on a rollout's length.")
    new_tokens_factor: float = _f(2.0, "A rollout may run to factor x the longest demonstration of the batch ...")
    new_tokens_margin: int = _f(16, "... plus this many tokens (whichever is smaller: this or max_new_tokens).")
    rollout_from: str = _f(
        "student",
        "Who samples the rollouts: student (on-policy, the paper) or teacher (the teacher with the demonstration in "
        "its context, TRL's generate_from_teacher: off-policy, but on a weak student its samples reach the answer) or "
        "demonstration (no sampling: the student is pulled toward the teacher's distribution on the demonstration's "
        "own tokens, soft targets where SFT has one-hot ones).",
    )
    samples_per_prompt: int = _f(1, "Rollouts sampled per prompt in each step (each one a training sequence).")
    rollout_group_steps: int = _f(
        8,
        "When the rollouts come from the frozen teacher (it does not change during a round), sample this many "
        "steps' rollouts in one generation: CPU decoding is overhead-bound, 64 prompts cost 2.3x less per rollout "
        "than 8. Rollouts from the student or an EMA teacher are always sampled step by step.",
    )
    merged_rollouts: bool = _f(
        True,
        "Generate with a plain copy of the model whose weights get the student's LoRA merged in before each step "
        "(generating through the peft wrapper was 2.1x slower). Costs one extra copy of the base weights, in bf16 "
        "when autocast is on.",
    )
    # --- loss (SDFT) ---------------------------------------------------------------------------------------------
    loss: str = _f(
        "forward_kl",
        "forward_kl = KL(teacher || student) (what the paper's results used), reverse_kl, "
        "or jsd (generalized Jensen-Shannon, see jsd_beta).",
    )
    jsd_beta: float = _f(0.5, "Weight of the teacher in the jsd mixture (0 -> forward KL limit, 1 -> reverse).")
    sft_weight: float = _f(
        0.0, "SDFT only: add this times the SFT loss (next-token loss on the demonstration's answer) to the loss."
    )
    skip_first_tokens: int = _f(3, "Completion tokens left out of the loss at the start (stops copying openers).")
    top_k: int = _f(0, "0 = KL over the full vocabulary; k > 0 = over the top-k tokens (memory saver).")
    top_k_tail: bool = _f(True, "With top_k: lump the remaining probability into one tail bucket (else renormalize).")
    top_k_support: str = _f("student", "With top_k: whose top-k tokens form the support, student or teacher.")
    teacher: str = _f("frozen", "frozen (the live version, unchanged for the round) or ema (moves toward the student).")
    ema_rate: float = _f(0.01, "With teacher=ema: teacher <- (1 - rate) * teacher + rate * student after each step.")
    # --- prompts -------------------------------------------------------------------------------------------------
    teacher_template: str = _f(
        PAPER_TEACHER_TEMPLATE,
        "The teacher's last user turn; {question} and {demonstration} "
        "are replaced by the user's turn and the corrected answer.",
    )
    max_prompt_tokens: int = _f(1024, "Budget of the student prompt (older turns are dropped to fit).")
    max_teacher_prompt_tokens: int = _f(2048, "Budget of the teacher prompt, which also holds the demonstration.")
    max_answer_tokens: int = _f(512, "A corrected answer longer than this is refused (skipped and reported).")
    # --- KL anchor on prompts without demonstrations ------------------------------------------------------------
    anchor_weight: float = _f(
        0.0,
        "Weight of the KL anchor: each step also samples answers to general prompts (anchor_prompts, none of them a "
        "general-suite probe) and adds this x KL(live version || student) on them, so what the model does on "
        "ordinary prompts stays where it was. 0 turns it off. Both methods.",
    )
    anchor_batch_size: int = _f(4, "Anchor prompts per optimizer step.")
    anchor_from: str = _f(
        "student",
        "Who answers the anchor prompts: student (on-policy) or teacher (the frozen live version, whose logits "
        "come with its samples: no teacher pass).",
    )
    anchor_to: str = _f(
        "live",
        "Whom the anchor holds the student to: live (the version the round starts from) or base (the model without "
        "any adapter, so that small drifts cannot add up over rounds).",
    )
    anchor_nearest: float = _f(
        0.0,
        "Fraction of each step's anchor prompts drawn from the pool prompts nearest the round's questions (most "
        "words shared: real capitals for a made-up capital), the knowledge a new fact is likeliest to overwrite; the "
        "rest at random. 0: all at random.",
    )
    anchor_max_new_tokens: int = _f(48, "Length cap of an anchor rollout.")
    anchor_prompts: str = _f("", "A text file of anchor prompts, one per line; empty: the shipped pool.")
    # --- data ----------------------------------------------------------------------------------------------------
    train_from: str = _f(
        "live",
        "live: the round continues the live version's adapter, which is also the teacher and the anchor. base: every "
        "round trains a fresh adapter from the base model on all the demonstrations the live version has learned "
        "plus the new ones (replay_fraction does not apply), with the base model as teacher and anchor, so that "
        "rounds cannot stack drift on drift.",
    )
    replay_fraction: float = _f(
        0.0,
        "Add this fraction (of the new demonstrations) of already learned ones, sampled "
        "from the live version's lineage, to rehearse them.",
    )
    # --- device --------------------------------------------------------------------------------------------------
    device: str = _f("auto", "auto (cuda when available, else cpu), cpu, cuda or cuda:N.")
    dtype: str = _f(
        "auto",
        "Weights: auto (float32 on every device), float32 or bfloat16. bf16 weights made continuing rounds on CUDA "
        "collapse (general suite 48 -> 13 in the second round): the teacher and student then differ by rounding.",
    )
    autocast: bool = _f(
        True,
        "bf16 autocast for the forward passes on a CPU with native bf16 (AVX512-BF16/AMX: ~3x faster, log-probs "
        "move <= 0.1 nats); ignored where bf16 is emulated (38x slower on an AVX2-only CPU) and on CUDA.",
    )
    threads: int = _f(
        0,
        "torch CPU threads while training (restored after); 0 leaves torch's setting. On a "
        "CPU shared with other busy processes 1 can be several times faster than 2.",
    )

    def __post_init__(self) -> None:
        self.lora_targets = list(self.lora_targets)
        checks = [
            (self.method in METHODS, f"method must be one of {', '.join(METHODS)}"),
            (self.loss in LOSSES, f"loss must be one of {', '.join(LOSSES)}"),
            (self.lr_schedule in ("cosine", "linear", "constant"), "lr_schedule must be cosine, linear or constant"),
            (self.teacher in ("frozen", "ema"), "teacher must be frozen or ema"),
            (self.rollout_from in ROLLOUT_SOURCES, f"rollout_from must be one of {', '.join(ROLLOUT_SOURCES)}"),
            (self.samples_per_prompt >= 1 and self.sft_weight >= 0, "samples_per_prompt >= 1, sft_weight >= 0"),
            (self.top_k_support in ("student", "teacher"), "top_k_support must be student or teacher"),
            (self.dtype in ("auto", "float32", "bfloat16"), "dtype must be auto, float32 or bfloat16"),
            (self.lora_r > 0 and self.lora_alpha > 0, "lora_r and lora_alpha must be positive"),
            (self.parent_a_lr_factor >= 0, "parent_a_lr_factor must be >= 0"),
            (self.adam_eps > 0, "adam_eps must be positive"),
            (self.learning_rate > 0, "learning_rate must be positive"),
            (self.temperature > 0, "temperature must be positive (rollouts are sampled)"),
            (self.teacher_temperature >= 0, "teacher_temperature must be >= 0 (0: the same as temperature)"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.batch_size > 0 and self.micro_batch_size > 0, "batch sizes must be positive"),
            (self.rollout_group_steps >= 1, "rollout_group_steps must be >= 1"),
            (self.steps >= 0 and self.epochs > 0 and self.min_steps >= 1, "steps >= 0, epochs > 0, min_steps >= 1"),
            (0 <= self.jsd_beta <= 1 and 0 < self.ema_rate <= 1, "jsd_beta in [0, 1], ema_rate in (0, 1]"),
            (0 <= self.replay_fraction <= 1, "replay_fraction must be in [0, 1]"),
            (self.train_from in ("live", "base"), "train_from must be live or base"),
            (self.anchor_weight >= 0 and self.anchor_batch_size >= 1, "anchor_weight >= 0, anchor_batch_size >= 1"),
            (self.anchor_from in ("student", "teacher"), "anchor_from must be student or teacher"),
            (self.anchor_to in ("live", "base"), "anchor_to must be live or base"),
            (self.anchor_max_new_tokens >= 1, "anchor_max_new_tokens must be >= 1"),
            (0 <= self.anchor_nearest <= 1, "anchor_nearest must be in [0, 1]"),
            (self.skip_first_tokens >= 0 and self.top_k >= 0, "skip_first_tokens and top_k must be >= 0"),
            (
                "{question}" in self.teacher_template and "{demonstration}" in self.teacher_template,
                "teacher_template must contain {question} and {demonstration}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ApprenticeError(f"learner config: {message}")

    @classmethod
    def fields_help(cls) -> dict[str, str]:
        return {f.name: f.metadata["help"] for f in dataclasses.fields(cls)}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LearnerConfig:
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ApprenticeError(f"learner config: unknown field(s) {', '.join(sorted(unknown))}")
        return cls(**values)

    def replace(self, **changes: Any) -> LearnerConfig:
        return self.from_dict({**self.to_dict(), **changes})

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> LearnerConfig:
        """A named preset (see PRESETS) with `overrides` on top."""
        if name not in PRESETS:
            raise ApprenticeError(f"unknown learner preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    def optimizer_steps(self, n_examples: int) -> int:
        """Steps for a round over `n_examples` prompts: `steps`, or epochs over them (at least min_steps)."""
        if self.steps:
            return self.steps
        per_epoch = -(-n_examples // min(self.batch_size, max(n_examples, 1)))
        return max(self.min_steps, round(self.epochs * per_epoch))


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's choices with LoRA's learning rate: what to start from on a strong in-context learner.
    "paper": {},
    # SmolLM2-135M on CPU, chosen with `apprentice bench lifelong` and the whole general suite: teacher-sampled
    # rollouts (they reach the answer on a weak student), the demonstration first in the teacher prompt with no phrase
    # to copy, 12 exposures per demonstration with 25% replay, and lr 2e-3 held in place by the KL anchor (weight 10) to
    # the live version on demonstration-free prompts. Every variant measured: bench/results/lifelong/README.md.
    "builtin": {
        "rollout_from": "teacher",
        "teacher_template": CONTEXT_FIRST_TEMPLATE,
        "learning_rate": 2e-3,
        "temperature": 0.7,
        "min_steps": 4,
        "epochs": 12.0,
        "replay_fraction": 0.25,
        "anchor_weight": 10.0,
        "anchor_from": "teacher",
        "max_new_tokens": 96,
        "new_tokens_factor": 1.5,
        "new_tokens_margin": 8,
    },
    # ~4B instruction models (e.g. Qwen3-4B-Instruct) on one GPU: the paper's sampling, a smaller lr (fp32 weights).
    "4b": {
        "learning_rate": 1e-4,
        "lora_r": 16,
        "lora_alpha": 32,
        "batch_size": 16,
        "micro_batch_size": 4,
        "epochs": 4.0,
        "max_new_tokens": 512,
    },
}


def default_preset(model: str) -> str:
    """The preset for a model spec: `builtin` for the built-in model, `paper` otherwise."""
    return "builtin" if model.startswith("builtin:") else "paper"
