"""Chat prompts as token ids, with message text always tokenized as text.

`apply_chat_template(tokenize=True)` would turn a `<|im_start|>` typed by a user into the real special token, so a
user could forge a turn. When a message contains such a string, `encode_chat` renders the template around
placeholders and encodes each message's content with `split_special_tokens=True`; otherwise it returns exactly the
template's own ids (piecewise encoding would shift BPE merges at the boundaries).
"""

from __future__ import annotations

import re
import secrets
from typing import Any


def has_special_text(tokenizer: Any, text: str) -> bool:
    return any(token in text for token in tokenizer.all_special_tokens + list(tokenizer.added_tokens_encoder))


def encode_chat(tokenizer: Any, messages: list[dict[str, str]], *, add_generation_prompt: bool = True) -> list[int]:
    """Token ids of the conversation in the tokenizer's chat template (ending with the assistant header if asked)."""
    if not any(has_special_text(tokenizer, m["content"]) for m in messages):
        return list(
            tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, return_dict=False)
        )
    nonce = secrets.token_hex(6)
    marks = [f"@@content-{nonce}-{i}@@" for i in range(len(messages))]
    templated = [{"role": m["role"], "content": mark} for m, mark in zip(messages, marks, strict=True)]
    text = tokenizer.apply_chat_template(templated, add_generation_prompt=add_generation_prompt, tokenize=False)
    ids: list[int] = []
    for piece in re.split(f"(@@content-{nonce}-\\d+@@)", text):
        if piece.startswith(f"@@content-{nonce}-"):
            content = messages[int(piece.rsplit("-", 1)[1].rstrip("@"))]["content"]
            ids += tokenizer(content, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        elif piece:
            ids += tokenizer(piece, add_special_tokens=False)["input_ids"]
    return ids
