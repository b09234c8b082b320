"""The edit history under a demonstration in the Review tab: who changed its correction or skill, when, and how."""

from __future__ import annotations

from typing import Any

from app.ui.admin_view import clip, esc

FIELDS = {"corrected_answer": "correction", "skill": "skill"}


def history_html(edits: list[dict[str, Any]]) -> str:
    if not edits:
        return '<div id="review-history" style="font-size:0.85em">Not edited since it arrived.</div>'
    items = []
    for e in edits:
        who = esc(e["editor"] or "a removed user")
        changed = "; ".join(
            f"{FIELDS.get(field, field)}: “{esc(clip(before or '', 120))}” → “{esc(clip(after or '', 120))}”"
            for field, (before, after) in e["changes"].items()
        )
        items.append(f"<li>{e['when']:%Y-%m-%d %H:%M} <b>{who}</b> changed {changed}</li>")
    return f'<div id="review-history" style="font-size:0.85em"><b>Edits</b><ul>{"".join(items)}</ul></div>'
