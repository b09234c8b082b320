"""HTML fragments of the admin tabs, built from app/services/queries.py dicts. Pure functions, no Gradio events.

Every text that came from a user, a model or a file goes through `esc` (html.escape): a `<script>` or an `<img
onerror>` inside a demonstration is shown as those characters, never run. Only the fixed markup here is HTML.
Colours come from Gradio's theme variables, so the fragments read in light and dark mode.
"""

from __future__ import annotations

import html
from typing import Any

BOX = (
    "border:1px solid var(--border-color-primary);border-radius:8px;padding:8px 10px;white-space:pre-wrap;"
    "word-break:break-word;background:var(--block-background-fill);min-height:2.2em"
)
LABEL = "font-size:0.85em;font-weight:600;color:var(--body-text-color-subdued);margin:6px 0 2px"
GRID2 = "display:grid;grid-template-columns:1fr 1fr;gap:12px"
GOOD, BAD, WARN = "#15803d", "#b91c1c", "#b45309"


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def message(text: str, *, error: bool = False) -> str:
    """A one-line status: what was done, or what went wrong."""
    colour = BAD if error else GOOD
    word = "Sorry:" if error else "Done:"
    return f'<div class="admin-status" style="color:{colour}"><b>{word}</b> {esc(text)}</div>'


def _box(title: str, text: Any, *, elem: str = "", note: str = "") -> str:
    ident = f' class="{esc(elem)}"' if elem else ""
    extra = f" <span style='font-weight:400'>{esc(note)}</span>" if note else ""
    return f'<div{ident}><div style="{LABEL}">{esc(title)}{extra}</div><div style="{BOX}">{esc(text)}</div></div>'


def conversation_html(messages: list[dict[str, str]]) -> str:
    turns = []
    for m in messages:
        turns.append(
            f'<div style="margin:4px 0"><span style="{LABEL}">{esc(m["role"])}</span>'
            f'<div style="{BOX}">{esc(m["content"])}</div></div>'
        )
    return "".join(turns)


def demo_html(d: dict[str, Any] | None) -> str:
    """A demonstration: facts, the conversation, then the original reply and the correction side by side."""
    if d is None:
        return "<p>Nothing selected. Pick a row of the queue above.</p>"
    facts = [
        f"<b>#{esc(d['id'])}</b>",
        f"status <b>{esc(d['status'])}</b>",
        f"skill <b>{esc(d['skill'] or '(none)')}</b>",
        f"by {esc(d['author'] or '(import)')}",
        f"on {esc(d['created'])}",
    ]
    if d.get("reviewer"):
        facts.append(f"reviewed by {esc(d['reviewer'])} on {esc(d['reviewed'])}")
    note = f'<div style="{LABEL}">Note: {esc(d["note"])}</div>' if d.get("note") else ""
    return (
        f'<div id="demo-detail" data-demo="{esc(d["id"])}">'
        f"<div>{' · '.join(facts)}</div>{note}"
        f'<div style="{LABEL}">Conversation</div>{conversation_html(d["messages"])}'
        f'<div style="{GRID2}">'
        f"{_box('Original reply (the model)', d['original_answer'] or '(none recorded)', elem='demo-original')}"
        f"{_box('Correction (what it should say)', d['corrected_answer'], elem='demo-correction')}"
        "</div></div>"
    )


def check_html(check: dict[str, Any] | None) -> str:
    """The teacher check: the live version's answer without and with the demonstration in context."""
    if check is None:
        return (
            "<p>No teacher check yet. <i>Teacher check</i> asks the live model for its answer without the "
            "demonstration and with it in context (the SDFT teacher prompt).</p>"
        )
    if check["teacher_disagrees"]:
        verdict = (
            f'<b style="color:{BAD}">⚑ The teacher still disagrees with the correction</b>: with the demonstration in '
            "its context the model does not give this answer, so SDFT has little to learn from it."
        )
    elif check["already_known"]:
        verdict = f'<b style="color:{WARN}">Already known</b>: the model gives this answer without help.'
    else:
        verdict = f'<b style="color:{GOOD}">Learnable</b>: the teacher agrees; the student does not yet.'
    stale = ""
    if check.get("correction_changed"):
        stale = f'<div style="color:{WARN}">The correction was edited after this check; run it again.</div>'
    return (
        f'<div id="teacher-check"><div>{verdict} <span style="{LABEL}">(version {esc(check["version"])}, '
        f"{esc(check['created'])})</span></div>{stale}"
        f'<div style="{GRID2}">'
        + _box(
            "Without the demonstration (student)",
            check["student_answer"] or "(empty)",
            note=f"agreement {check['student_agreement']:.2f}",
        )
        + _box(
            "With it in context (teacher)",
            check["teacher_answer"] or "(empty)",
            note=f"agreement {check['teacher_agreement']:.2f}",
        )
        + "</div></div>"
    )


def flag(d: dict[str, Any]) -> str:
    check = d.get("teacher_check")
    if check is None:
        return "not checked yet"
    if check.get("correction_changed"):
        return "edited since its check"
    if check["teacher_disagrees"]:
        return "⚑ teacher disagrees"
    return "known" if check["already_known"] else "learnable"


def short(text: str | None, width: int = 80) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


QUEUE_HEADERS = ["id", "status", "skill", "author", "created", "question", "correction", "teacher check"]


def queue_rows(items: list[dict[str, Any]]) -> list[list[Any]]:
    """Rows of the queue table (plain text cells; the Dataframe shows them as text)."""
    return [
        [
            d["id"],
            d["status"],
            d["skill"] or "",
            d["author"] or "(import)",
            (d["created"] or "")[:16],
            short(d["question"], 70),
            short(d["corrected_answer"], 70),
            flag(d),
        ]
        for d in items
    ]


def table_html(headers: list[str], rows: list[list[Any]], *, elem: str = "") -> str:
    """A plain escaped table (for read-only listings)."""
    ident = f' id="{esc(elem)}"' if elem else ""
    head = "".join(
        f'<th style="text-align:left;padding:4px 8px;border-bottom:1px solid var(--border-color-primary)">{esc(h)}</th>'
        for h in headers
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td style="padding:4px 8px;vertical-align:top;border-bottom:1px solid var(--border-color-primary);'
            f'white-space:pre-wrap">{esc(c)}</td>'
            for c in row
        )
        + "</tr>"
        for row in rows
    )
    return f'<table{ident} style="border-collapse:collapse;width:100%"><tr>{head}</tr>{body}</table>'


def clip(text: str | None, width: int = 400) -> str:
    """At most `width` characters (plus a note of how many were left out), to keep long answers from filling pages."""
    text = text or ""
    return text if len(text) <= width else f"{text[:width].rstrip()}… ({len(text) - width:,} more characters)"


def side_by_side(pairs: list[dict[str, Any]], *, old: str, new: str, empty: str = "Nothing to compare.") -> str:
    """Old-vs-new answers: question and reference, then both versions' answers in two columns (each text clipped)."""
    if not pairs:
        return f"<p>{esc(empty)}</p>"
    out = []
    for p in pairs:
        old_note = new_note = ""
        if "old_correct" in p:
            old_note, new_note = (
                ("✓ correct" if p["old_correct"] else "✗ wrong"),
                ("✓ correct" if p["new_correct"] else "✗ wrong"),
            )
        elif "old_agreement" in p:
            old_note, new_note = f"agreement {p['old_agreement']:.2f}", f"agreement {p['new_agreement']:.2f}"
        title = f"{p['kind']} {p.get('probe_id') or p.get('id')} · {p.get('skill') or ''}"
        out.append(
            '<div class="compare-item" style="margin:10px 0;padding-top:6px;border-top:1px solid '
            f'var(--border-color-primary)"><div style="{LABEL}">{esc(title)}</div>'
            f"{_box('Question', clip(p['question']))}{_box('Reference', clip(p['reference']))}"
            f'<div style="{GRID2}">{_box(old, clip(p["old"]) or "(empty)", note=old_note)}'
            f"{_box(new, clip(p['new']) or '(empty)', note=new_note)}</div></div>"
        )
    return "".join(out)
