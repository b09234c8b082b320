"""Student and teacher prompts from a demonstration, as token ids, within their own length budgets.

student prompt = the conversation up to the corrected turn (chat template, generation prompt appended);
teacher prompt = the same conversation with the last user turn rewritten by `config.teacher_template`, so the
demonstration sits in the teacher's context. Both are built from the same messages by the same chat template, so the
system prompt (given, or the template's default) is identical in the two. Message text is tokenized as text
(`learner.chat.encode_chat`): a demonstration holding `<|im_start|>assistant` cannot forge a turn.

Budgets: a context over budget loses its oldest turns (system messages and the last user turn always stay, and both
prompts lose the same turns); a demonstration that still does not fit, or whose answer is over `max_answer_tokens`,
is refused with a `PromptError` naming the budget. Nothing is ever left-truncated mid-prompt.

    prompt = build_prompt(tokenizer, messages, answer, config)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from learner.chat import encode_chat
from learner.config import LearnerConfig
from storage.demonstrations import validate_messages
from storage.errors import ApprenticeError


class PromptError(ApprenticeError):
    """A demonstration that cannot become a training example (malformed or over a budget)."""


@dataclass(frozen=True)
class Example:
    """One demonstration ready for training (`demo_id` None outside the database)."""

    messages: list[dict[str, str]]
    answer: str
    demo_id: int | None = None


@dataclass(frozen=True)
class Prompt:
    """Token ids of one training example; `answer_ids` end with the end-of-turn token."""

    student_ids: list[int]
    teacher_ids: list[int]
    answer_ids: list[int]
    dropped_turns: int = 0
    demo_id: int | None = None


def teacher_turn(template: str, question: str, demonstration: str) -> str:
    """The teacher's last user turn. One pass, so braces inside the question or the answer stay literal."""
    values = {"question": question, "demonstration": demonstration}
    return re.sub(r"\{(question|demonstration)\}", lambda m: values[m.group(1)], template)


def end_of_turn_id(tokenizer: Any) -> int:
    """The token that ends an assistant turn in the chat template (`<|im_end|>` for ChatML), else eos."""
    for token in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
        if token in tokenizer.get_vocab():
            return tokenizer.convert_tokens_to_ids(token)
    return tokenizer.eos_token_id


def teacher_messages(messages: list[dict[str, str]], answer: str, template: str) -> list[dict[str, str]]:
    question = messages[-1]["content"]
    return messages[:-1] + [{"role": "user", "content": teacher_turn(template, question, answer)}]


def _drop_oldest_turn(messages: list[dict[str, str]]) -> list[dict[str, str]] | None:
    """The conversation without its oldest non-system message (None when only system + last user turn remain)."""
    for i, m in enumerate(messages[:-1]):
        if m["role"] != "system":
            return messages[:i] + messages[i + 1 :]
    return None


def build_prompt(
    tokenizer: Any, messages: list[dict[str, str]], answer: str, config: LearnerConfig, *, demo_id: int | None = None
) -> Prompt:
    """Student and teacher prompt ids for one demonstration; raises PromptError when it cannot fit its budgets."""
    label = f"demonstration {demo_id}" if demo_id is not None else "demonstration"
    try:
        messages = validate_messages(messages)
    except ApprenticeError as e:
        raise PromptError(f"{label}: {e}") from None
    if not answer.strip():
        raise PromptError(f"{label}: the corrected answer is empty")
    answer_ids = tokenizer(answer, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    if len(answer_ids) > config.max_answer_tokens:
        raise PromptError(
            f"{label}: the corrected answer is {len(answer_ids)} tokens, over the limit of {config.max_answer_tokens} "
            "(learner setting max_answer_tokens); shorten it or raise the limit"
        )
    dropped = 0
    current: list[dict[str, str]] | None = messages
    while current is not None:
        student = encode_chat(tokenizer, current)
        teacher = encode_chat(tokenizer, teacher_messages(current, answer, config.teacher_template))
        if len(student) <= config.max_prompt_tokens and len(teacher) <= config.max_teacher_prompt_tokens:
            return Prompt(student, teacher, answer_ids + [end_of_turn_id(tokenizer)], dropped, demo_id)
        current = _drop_oldest_turn(current)
        dropped += 1
    raise PromptError(
        f"{label}: even without earlier turns the student prompt is {len(student)} tokens (budget "
        f"{config.max_prompt_tokens}) and the teacher prompt with the demonstration is {len(teacher)} tokens (budget "
        f"{config.max_teacher_prompt_tokens}); shorten the question or the answer, or raise max_prompt_tokens / "
        "max_teacher_prompt_tokens"
    )


def build_prompts(
    tokenizer: Any, examples: list[Example], config: LearnerConfig
) -> tuple[list[Prompt], list[tuple[int | None, str]]]:
    """Prompts for the examples that fit, and (demo_id, reason) for each one skipped."""
    prompts, skipped = [], []
    for ex in examples:
        try:
            prompts.append(build_prompt(tokenizer, ex.messages, ex.answer, config, demo_id=ex.demo_id))
        except PromptError as e:
            skipped.append((ex.demo_id, str(e)))
    return prompts, skipped
