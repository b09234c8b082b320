"""What the chat tab shows: stored messages turned into Gradio Chatbot messages, and back.

Pure functions (no Gradio events, no database), tested in tests/test_ui_chat_view.py.

- Every text is shown as text. The Chatbot renders message text as (sanitized) HTML even with Markdown off, so a
  `<b>` typed by a user or produced by the model would turn bold and an `<img>` would load. `as_text` puts a zero-width
  space after every `<` or `&` that could open a tag or an entity: the browser then shows the characters themselves,
  and the edit box shows exactly what was written. `from_text` removes those marks again from edited text.
- Each assistant reply is followed by a small collapsed "thought" line naming the model version that wrote it; Gradio
  groups it into the reply's bubble. Both entries map to the reply's message id, so likes, edits and selections on
  either resolve to the stored reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

ZWSP = "\u200b"
_OPENERS = re.compile(r"([<&])(?=[A-Za-z#/!?])")
_MARKED = re.compile(f"([<&]){ZWSP}")


def as_text(text: str) -> str:
    """`text` made safe to hand to the Chatbot: shown verbatim, never interpreted as HTML."""
    return _OPENERS.sub(lambda m: m.group(1) + ZWSP, text)


def from_text(shown: str) -> str:
    """The text a user meant, from what the Chatbot hands back (an edit): undoes `as_text`."""
    return _MARKED.sub(r"\1", shown)


@dataclass(frozen=True)
class StoredMessage:
    """The part of a stored message the view needs (storage.models.Message has these fields)."""

    id: int
    position: int
    role: str
    content: str
    model_version: str | None = None
    response_id: str | None = None


@dataclass(frozen=True)
class Correction:
    """The user's latest correction of a reply and its review state (storage.models.DEMO_STATUSES)."""

    text: str
    status: str = "pending"


REVIEW_NOTES = {
    "pending": "your correction is saved for review",
    "approved": "your correction was approved",
    "held_out": "your correction was approved as a test question",
    "rejected": "your correction was not accepted",
}


@dataclass(frozen=True)
class Entry:
    """What one Chatbot entry stands for: the stored message, and whether it is the version line under a reply."""

    message_id: int
    role: str
    is_tag: bool = False


def version_tag(version: str | None, *, review: str | None = None, original: str = "", pending: bool = False) -> dict:
    """The line under a reply that names its model version (a collapsed Chatbot "thought"); `review` is the state of
    the user's correction of it, if any (the original reply then goes inside)."""
    meta: dict[str, Any] = {"title": f"model {version or 'unknown'}", "status": "pending" if pending else "done"}
    body = ""
    if review is not None:
        meta["log"] = REVIEW_NOTES.get(review, f"your correction is {review}")
        body = f"Original reply:\n{original}" if review != "rejected" else ""
    return {"role": "assistant", "content": as_text(body), "metadata": meta}


def render(
    messages: list[StoredMessage], corrections: dict[int, Correction] | None = None
) -> tuple[list[dict[str, Any]], list[Entry]]:
    """Chatbot value for a stored conversation and, index for index, what each entry stands for.

    A reply the user corrected shows the correction (the original goes in the version line) unless a reviewer
    rejected it. System messages are not shown (Gradio's Chatbot hides them anyway) but stay part of the conversation
    the model answers."""
    corrections = corrections or {}
    value: list[dict[str, Any]] = []
    entries: list[Entry] = []
    for m in messages:
        if m.role == "user":
            value.append({"role": "user", "content": as_text(m.content)})
            entries.append(Entry(m.id, "user"))
        elif m.role == "assistant":
            fix = corrections.get(m.id)
            review = fix.status if fix is not None else None
            shown = fix.text if fix is not None and review != "rejected" else m.content
            value.append({"role": "assistant", "content": as_text(shown)})
            value.append(version_tag(m.model_version, review=review, original=m.content))
            entries += [Entry(m.id, "assistant"), Entry(m.id, "assistant", is_tag=True)]
    return value, entries


def reply_choices(messages: list[StoredMessage]) -> list[tuple[str, int]]:
    """Dropdown choices naming each reply: ("#2 · v1 · first words", message id), latest last."""
    choices = []
    for n, m in enumerate((m for m in messages if m.role == "assistant"), start=1):
        words = " ".join(m.content.split())
        snippet = words[:48] + ("…" if len(words) > 48 else "")
        choices.append((f"#{n} · {m.model_version or '?'} · {snippet or '(empty)'}", m.id))
    return choices


def conversation_label(title: str, updated: Any) -> str:
    """How a conversation is listed: its title (first user line) and when it last changed."""
    title = " ".join(title.split()) or "Untitled"
    return f"{title[:60]} · {updated:%b %d, %H:%M}"
