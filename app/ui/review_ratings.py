"""The Review tab's "Rated down, no correction yet": replies users gave a thumbs down (with their reason) that nobody
corrected, newest rating first. A click opens one (its conversation, the reply, every rating of it); the reviewer
writes what it should have said and "Make it a correction" stores a pending demonstration they author, which then
waits in the queue above like any other (and gets its teacher check in the background). Reads and writes go through
storage/ratings.py (app/services/queries.read_rated_down for the list).
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from app.services import queries
from app.state import AppState
from app.ui import auth
from app.ui.admin_view import BOX, LABEL, conversation_html, esc, message, short
from storage import ratings
from storage.errors import ApprenticeError
from storage.queue import queue_skills

REVIEW_ROLES = ("admin", "reviewer")
HEADERS = ["reply", "version", "user", "rated", "reason", "question", "reply text"]
PAGE = 25


def rated_rows(items: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [r["message_id"], r["version"] or "", r["user"], (r["rated"] or "")[:16], short(r["reason"], 60) or "(none)",
         short(r["question"], 60), short(r["reply"], 60)]
        for r in items
    ]  # fmt: skip


def rated_html(d: dict[str, Any] | None) -> str:
    if d is None:
        return "<p>Nothing opened. Click a row above to read the reply and correct it.</p>"
    verdicts = "".join(
        f"<li><b>{'up' if r['rating'] > 0 else 'down'}</b> by {esc(r['user'] or 'a removed user')}, "
        f"{esc(r['created'][:16].replace('T', ' '))}: "
        f"{esc(r['reason'] or '(no reason given)')}</li>"
        for r in d["ratings"]
    )
    return (
        f'<div id="rated-reply" data-message="{esc(d["message_id"])}">'
        f"<div>reply <b>{esc(d['message_id'])}</b> · version <b>{esc(d['version'] or '?')}</b></div>"
        f'<div style="{LABEL}">Conversation</div>{conversation_html(d["messages"])}'
        f'<div style="{LABEL}">The reply rated down</div><div class="rated-text" style="{BOX}">{esc(d["reply"])}</div>'
        f'<div style="{LABEL}">Ratings</div><ul class="rated-ratings">{verdicts}</ul></div>'
    )


class RatedHandlers:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self.c: dict[str, Any] = {}

    def user(self, request: gr.Request | None) -> Any:
        return auth.require_role(self.state, request, REVIEW_ROLES)

    def page(self, before: int | None, note: str = "") -> dict:
        c = self.c
        data = queries.read_rated_down(self.state.db, before_id=before, limit=PAGE)
        if not data["items"] and before is not None:
            return self.page(None, note)
        ids = [r["message_id"] for r in data["items"]]
        info = f"**{data['total']:,}** repl{'y' if data['total'] == 1 else 'ies'} rated down, no correction yet"
        return {
            c["view"]: {"before": before, "ids": ids, "older": data["older"]},
            c["table"]: rated_rows(data["items"]),
            c["info"]: info,
            c["older"]: gr.update(interactive=data["older"] is not None),
            c["message"]: note,
            **self.opened(ids[0] if ids else None),
        }

    def opened(self, message_id: int | None) -> dict:
        c = self.c
        d = ratings.rated_reply(self.state.db, message_id=message_id) if message_id is not None else None
        return {
            c["opened"]: message_id,
            c["detail"]: rated_html(d),
            c["correction"]: gr.update(value="", interactive=d is not None),
            c["skill"]: gr.update(choices=queue_skills(self.state.db), value=""),
            c["make"]: gr.update(interactive=d is not None),
        }

    def on_load(self, request: gr.Request) -> dict:
        try:
            self.user(request)
        except ApprenticeError:
            return {self.c["message"]: ""}  # the tab is hidden from this user
        return self.page(None)

    def refresh(self, request: gr.Request) -> dict:
        try:
            self.user(request)
            return self.page(None)
        except ApprenticeError as e:
            return {self.c["message"]: message(str(e), error=True)}

    def older(self, view: dict[str, Any], request: gr.Request) -> dict:
        try:
            self.user(request)
            return self.page(view.get("older"))
        except ApprenticeError as e:
            return {self.c["message"]: message(str(e), error=True)}

    def open_row(self, view: dict[str, Any], event: gr.SelectData, request: gr.Request) -> dict:
        try:
            self.user(request)
            row = event.index[0] if isinstance(event.index, list | tuple) else event.index
            ids = view.get("ids") or []
            if not isinstance(row, int) or not 0 <= row < len(ids):
                raise ApprenticeError("that row is gone; refresh the list")
            return {**self.opened(ids[row]), self.c["message"]: ""}
        except ApprenticeError as e:
            return {self.c["message"]: message(str(e), error=True)}

    def correct(
        self, view: dict[str, Any], message_id: int | None, correction: str, skill: str | None, request: gr.Request
    ) -> dict:
        try:
            user = self.user(request)
            if message_id is None:
                raise ApprenticeError("open a reply first (click a row of the list)")
            demo = ratings.correct_rated_reply(
                self.state.db, message_id=int(message_id), reviewer_id=user.id, correction=correction or "",
                skill=skill or None,
            )  # fmt: skip
            note = f"reply {message_id} is now demonstration #{demo.id}, pending in the queue above (search to see it)"
            return self.page(view.get("before"), message(note))
        except ApprenticeError as e:
            return {self.c["message"]: message(str(e), error=True)}


def build(state: AppState, demo: gr.Blocks) -> None:
    """The rated-down list under the review queue (called inside the Review tab)."""
    h = RatedHandlers(state)
    with gr.Accordion("Rated down, no correction yet", open=True, elem_id="rated-section"):
        view, opened = gr.State({}), gr.State(None)
        with gr.Row(equal_height=True):
            info = gr.Markdown(elem_id="rated-info")
            older = gr.Button("Older →", size="sm", elem_id="rated-older", interactive=False)
            refresh = gr.Button("Refresh", size="sm", elem_id="rated-refresh")
        table = gr.Dataframe(
            headers=HEADERS, interactive=False, wrap=True, elem_id="rated-table", max_height=300,
            label="Replies rated down (click a row to open it)",
            column_widths=["6%", "8%", "8%", "12%", "22%", "22%", "22%"],
        )  # fmt: skip
        note = gr.HTML(elem_id="rated-message")
        detail = gr.HTML(rated_html(None), elem_id="rated-detail")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                correction = gr.Textbox(label="What it should have said", lines=3, elem_id="rated-correction")
            with gr.Column(scale=1, min_width=220):
                skill = gr.Dropdown([], label="Skill", allow_custom_value=True, elem_id="rated-skill")
                make = gr.Button("Make it a correction", variant="primary", elem_id="rated-correct")
    h.c = {"view": view, "opened": opened, "info": info, "older": older, "table": table, "message": note,
           "detail": detail, "correction": correction, "skill": skill, "make": make}  # fmt: skip
    listing = [view, table, info, older, note, opened, detail, correction, skill, make]
    quiet = {"show_progress": "hidden"}
    demo.load(h.on_load, None, listing, **quiet)
    refresh.click(h.refresh, None, listing, **quiet)
    older.click(h.older, [view], listing, **quiet)
    table.select(h.open_row, [view], [opened, detail, correction, skill, make, note], **quiet)
    make.click(h.correct, [view, opened, correction, skill], listing, **quiet)
