"""The Versions tab (admins and reviewers): every model version with its parent, round, method, demonstrations
learned, scores and status; for a chosen version its lineage, the demonstrations it learned and old-vs-new answers
("Compare with its parent"); for admins only, the buttons that make it live (promote a candidate, or roll back to an
earlier version), hidden from reviewers and refused to them by the handlers.

Activation goes through app/services/versions.go_live (adapter checksum, the database's active version, the
engine's hot swap), the same path as POST /api/admin/versions/{name}/activate.
"""

from __future__ import annotations

import asyncio
from typing import Any

import gradio as gr

from app.services import answers, queries
from app.services import versions as live
from app.state import AppState
from app.ui import auth
from app.ui.admin_view import esc, message, short, side_by_side, table_html
from storage.errors import ApprenticeError

ADMIN = ("admin",)
READERS = ("admin", "reviewer")  # see versions and compare them
NO_PROBES = "No per-probe replies stored for both versions: evaluate both (Dashboard tab) to compare them here."
NO_DEMOS = "This version's round learned no demonstrations (or it is the base model)."
EDITED = " (edited since: the next round learns the new text)"
HEADERS = ["version", "status", "parent", "round", "method", "learned", "scores", "created", "activated", "note"]
WIDTHS = ["7%", "8%", "6%", "6%", "7%", "7%", "16%", "9%", "9%", "25%"]  # the note (the gate's reason) wraps


def scores_text(scores: dict[str, float]) -> str:
    return ", ".join(f"{s} {100 * v:.1f}%" for s, v in sorted(scores.items())) or "not evaluated"


def version_table(rows: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            r["name"],
            r["status"] + (" ●" if r["status"] == "active" else ""),
            r["parent"] or "",
            r["round"] if r["round"] is not None else "",
            r["method"],
            f"{r['demonstrations']}" + (f" (+{r['replayed']} replayed)" if r["replayed"] else ""),
            scores_text(r["scores"]),
            (r["created"] or "")[:16],
            (r["activated"] or "")[:16],
            short(r["reason"], 400) + ("; made live by hand" if r["by_hand"] else ""),
        ]
        for r in reversed(rows)  # newest first
    ]


def detail_html(d: dict[str, Any]) -> str:
    chain = " ← ".join(d["lineage"])
    parts = [
        f"<div><b>{esc(d['name'])}</b> · {esc(d['status'])} · lineage: {esc(chain)}</div>",
        f"<div>method {esc(d['method'] or '-')} · round {esc(d['round'] if d['round'] is not None else '-')}"
        f" · scores: {esc(scores_text(d['scores']))}</div>",
    ]
    if d["reason"]:
        by_hand = f"; made live by hand anyway (last activated {d['activated'][:16]})" if d["by_hand"] else ""
        parts.append(f"<div>Gate: {esc(d['reason'] + by_hand)}</div>")
    if d["adapter_path"]:
        parts.append(f"<div style='font-size:0.85em'>adapter {esc(d['adapter_path'])}</div>")
    if d["learned"]:
        parts.append(
            f"<div style='margin-top:8px'><b>Demonstrations learned in round {esc(d['round'])}</b> "
            f"(open them in the Review tab: status 'any', learned in round {esc(d['round'])})</div>"
        )
        rows = [
            [x["id"], x["skill"] or "", x["status"], "replay" if x["replay"] else "new", x["question"],
             x["corrected_answer"] + (EDITED if x["edited_since"] else "")]
            for x in d["learned"]
        ]  # fmt: skip
        parts.append(table_html(["id", "skill", "status", "", "question", "correction"], rows, elem="version-learned"))
    return f'<div id="version-detail">{"".join(parts)}</div>'


class VersionHandlers:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self.c: dict[str, Any] = {}

    def listing(self, chosen: str | None, note: str = "") -> dict:
        c = self.c
        rows = queries.version_rows(self.state.db)
        names = [r["name"] for r in reversed(rows)]
        chosen = chosen if chosen in names else next((r["name"] for r in rows if r["status"] == "active"), None)
        out = {
            c["table"]: version_table(rows),
            c["choice"]: gr.update(choices=names, value=chosen),
            c["message"]: note,
        }
        out[c["detail"]] = detail_html(queries.version_detail(self.state.db, chosen)) if chosen else ""
        return out

    def on_load(self, request: gr.Request) -> dict:
        try:
            user = auth.require_role(self.state, request, READERS)
        except ApprenticeError:
            return {self.c["message"]: ""}  # the tab is hidden from this user
        admin = user.role in ADMIN
        return {**self.listing(None), **{self.c[k]: gr.update(visible=admin) for k in ("activate", "rollback")}}

    def refresh(self, chosen: str | None, request: gr.Request) -> dict:
        try:
            auth.require_role(self.state, request, READERS)
            return self.listing(chosen)
        except ApprenticeError as e:
            return {self.c["message"]: message(str(e), error=True)}

    def pick_row(self, event: gr.SelectData, request: gr.Request) -> dict:
        try:
            auth.require_role(self.state, request, READERS)
            row = event.row_value or []
            return self.listing(str(row[0]) if row else None)
        except ApprenticeError as e:
            return {self.c["message"]: message(str(e), error=True)}

    async def activate(self, chosen: str | None, request: gr.Request) -> dict:
        try:
            await asyncio.to_thread(auth.require_role, self.state, request, ADMIN)
            if not chosen:
                raise ApprenticeError("choose a version first")
            done = await live.go_live(self.state, chosen)
            note = f"{done['active']} is live (was {done['previous']})"
            return {**await asyncio.to_thread(self.listing, chosen, message(note)), self.c["compare"]: ""}
        except ApprenticeError as e:
            return {self.c["message"]: message(str(e), error=True)}

    async def rollback(self, request: gr.Request) -> dict:
        try:
            await asyncio.to_thread(auth.require_role, self.state, request, ADMIN)
            target = await asyncio.to_thread(live.previous_live, self.state.db)
        except ApprenticeError as e:
            return {self.c["message"]: message(str(e), error=True)}
        return await self.activate(target, request)

    async def compare(self, chosen: str | None, request: gr.Request) -> dict:
        try:
            await asyncio.to_thread(auth.require_role, self.state, request, READERS)
            if not chosen:
                raise ApprenticeError("choose a version first")
            got = await answers.compare(self.state, chosen)
            old, new = f"{got['parent']} (old)", f"{got['version']} (new)"
            body = (
                "<h4>Probes (from stored evaluations)</h4>"
                f"{side_by_side(got['probes'], old=old, new=new, empty=NO_PROBES)}"
                f"<h4>Demonstrations learned (answered now, greedy)</h4>"
                f"{side_by_side(got['demonstrations'], old=old, new=new, empty=NO_DEMOS)}"
            )
            return {self.c["compare"]: f'<div id="version-compare">{body}</div>', self.c["message"]: ""}
        except ApprenticeError as e:
            return {self.c["message"]: message(str(e), error=True)}


def build(state: AppState, demo: gr.Blocks) -> None:
    """Lay out the versions tab and wire its events (called inside `with gr.Tab(...)`)."""
    h = VersionHandlers(state)
    table = gr.Dataframe(
        headers=HEADERS,
        interactive=False,
        wrap=True,
        column_widths=WIDTHS,
        elem_id="versions-table",
        label="Model versions, newest first (● live; click a row to choose it)",
        max_height=360,
    )
    with gr.Row(equal_height=True):
        choice = gr.Dropdown([], label="Version", elem_id="versions-choice", scale=2)
        activate = gr.Button("Make live (promote / roll back)", variant="primary", elem_id="versions-activate", scale=2)
        compare = gr.Button("Compare with its parent", elem_id="versions-compare", scale=2)
        rollback = gr.Button("Roll back to the previous live version", variant="stop", elem_id="versions-rollback",
                             scale=2)  # fmt: skip
        refresh = gr.Button("Refresh", size="sm", elem_id="versions-refresh", scale=1)
    note = gr.HTML(elem_id="versions-message")
    detail = gr.HTML(elem_id="versions-detail")
    compared = gr.HTML(elem_id="versions-compared")
    h.c = {"table": table, "choice": choice, "message": note, "detail": detail, "compare": compared,
           "activate": activate, "rollback": rollback}  # fmt: skip
    listing = [table, choice, note, detail]
    quiet = {"show_progress": "hidden"}
    demo.load(h.on_load, None, [*listing, activate, rollback], **quiet)
    refresh.click(h.refresh, [choice], listing, **quiet)
    choice.input(h.refresh, [choice], listing, **quiet)
    table.select(h.pick_row, None, listing, **quiet)
    activate.click(h.activate, [choice], [*listing, compared], show_progress="minimal")
    rollback.click(h.rollback, None, [*listing, compared], show_progress="minimal")
    compare.click(h.compare, [choice], [compared, note], show_progress="minimal")
