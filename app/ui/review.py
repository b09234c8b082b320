"""The Review tab (admins and reviewers): the queue of demonstrations, one opened in full, and the review actions.

`build(state, demo)` lays the tab out inside an open `gr.Tab` and wires it to app/ui/review_handlers.py:

- filters (status, skill, author, date range, text, "learned in round") and Search; Newer / Older page through the
  queue (keyset pages: as fast at row 100,000 as at row 1);
- a click on a row opens that demonstration: its conversation, the original reply and the correction side by side
  (the edit fields and actions stay locked until it has loaded, so nothing typed is overwritten or goes to the
  wrong row; every other event that refills them locks them the same way);
- Approve, Reject (with a reason), Save edits (correction and skill), Hold out (becomes an evaluation probe), and the
  Teacher check (the live model's answer without and with the demonstration in context; the server also runs it on
  every new demonstration in the background, app/services/arrival_checks.py);
- approving a demonstration the teacher check flags asks for a second look: the approval is refused with the reason,
  and "Approve anyway" appears; it confirms (any other row opened hides it again);
- the "Teacher check" filter lists flagged, learnable, already known or not yet checked demonstrations;
- bulk: tick rows in "Select", then approve, reject, hold out or teacher-check them together (a bulk approval leaves
  flagged ones pending, named in its message: open them to approve them one by one);
- below, replies users rated down that nobody corrected yet, which a reviewer turns into corrections
  (app/ui/review_ratings.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.state import AppState
from app.ui import review_ratings
from app.ui.admin_view import QUEUE_HEADERS, check_html, demo_html
from app.ui.review_handlers import CHECK_CHOICES, STATUS_CHOICES, ReviewHandlers


@dataclass
class ReviewComponents:
    view: gr.State  # {"filter": {...}, "cursor": {...}, "ids": [...]}: what the table shows
    opened: gr.State  # id of the opened demonstration
    status: gr.Dropdown
    skill: gr.Dropdown
    author: gr.Dropdown
    since: gr.Textbox
    until: gr.Textbox
    text: gr.Textbox
    round: gr.Textbox
    flagged: gr.Dropdown  # the teacher check state filter
    search: gr.Button
    page_info: gr.Markdown
    newer: gr.Button
    older: gr.Button
    table: gr.Dataframe
    selected: gr.CheckboxGroup
    bulk_reason: gr.Textbox
    bulk_approve: gr.Button
    bulk_reject: gr.Button
    bulk_hold: gr.Button
    bulk_check: gr.Button
    detail: gr.HTML
    correction: gr.Textbox
    edit_skill: gr.Dropdown
    reason: gr.Textbox
    approve: gr.Button
    approve_anyway: gr.Button  # shown after an approval the teacher check flagged: the confirmation
    reject: gr.Button
    save: gr.Button
    hold_out: gr.Button
    teacher: gr.Button
    check: gr.HTML
    message: gr.HTML


def layout() -> ReviewComponents:
    view, opened = gr.State({}), gr.State(None)
    with gr.Row(equal_height=True):
        status = gr.Dropdown(STATUS_CHOICES, value="pending", label="Status", elem_id="review-status", scale=1)
        skill = gr.Dropdown([("any skill", "*")], value="*", label="Skill", elem_id="review-skill", scale=1)
        author = gr.Dropdown([("anyone", 0)], value=0, label="Author", elem_id="review-author", scale=1)
        since = gr.Textbox(label="From (YYYY-MM-DD)", elem_id="review-since", scale=1)
        until = gr.Textbox(label="Before (YYYY-MM-DD)", elem_id="review-until", scale=1)
        text = gr.Textbox(label="Text contains", elem_id="review-text", scale=2)
        rnd = gr.Textbox(label="Learned in round", elem_id="review-round", scale=1)
    with gr.Row(equal_height=True):
        flagged = gr.Dropdown(CHECK_CHOICES, value="*", label="Teacher check", elem_id="review-check-state", scale=3)
        search = gr.Button("Search", variant="primary", elem_id="review-search", scale=1)
    with gr.Row(equal_height=True):
        page_info = gr.Markdown(elem_id="review-page-info")
        newer = gr.Button("← Newer", size="sm", elem_id="review-newer", interactive=False)
        older = gr.Button("Older →", size="sm", elem_id="review-older", interactive=False)
    table = gr.Dataframe(
        headers=QUEUE_HEADERS,
        datatype=["number", "str", "str", "str", "str", "str", "str", "str"],
        interactive=False,
        wrap=True,
        column_widths=["5%", "9%", "9%", "8%", "12%", "25%", "22%", "10%"],
        elem_id="review-table",
        label="Queue (click a row to open it)",
        max_height=420,
    )
    with gr.Accordion("Bulk actions on selected rows", open=False, elem_id="review-bulk"):
        selected = gr.CheckboxGroup([], label="Select", elem_id="review-selected", show_select_all=True)
        with gr.Row(equal_height=True):
            bulk_reason = gr.Textbox(label="Reason (for reject)", elem_id="review-bulk-reason", scale=3)
            bulk_approve = gr.Button("Approve selected", elem_id="review-bulk-approve", scale=1)
            bulk_reject = gr.Button("Reject selected", variant="stop", elem_id="review-bulk-reject", scale=1)
            bulk_hold = gr.Button("Hold out selected", elem_id="review-bulk-hold", scale=1)
            bulk_check = gr.Button("Teacher check selected", elem_id="review-bulk-check", scale=1)
    message = gr.HTML(elem_id="review-message")
    detail = gr.HTML(demo_html(None), elem_id="review-detail")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            correction = gr.Textbox(label="Correction (edit, then Save)", lines=4, elem_id="review-correction")
        with gr.Column(scale=1, min_width=220):
            edit_skill = gr.Dropdown(
                [], label="Skill", allow_custom_value=True, elem_id="review-edit-skill", info="pick or type a name"
            )
            save = gr.Button("Save edits", elem_id="review-save")
    with gr.Row(equal_height=True):
        reason = gr.Textbox(label="Reason (for reject)", elem_id="review-reason", scale=3)
        approve = gr.Button("Approve", variant="primary", elem_id="review-approve", scale=1)
        approve_anyway = gr.Button(
            "Approve anyway (flagged)", variant="stop", elem_id="review-approve-anyway", scale=1, visible=False
        )
        reject = gr.Button("Reject", variant="stop", elem_id="review-reject", scale=1)
        hold_out = gr.Button("Hold out as probe", elem_id="review-hold-out", scale=1)
        teacher = gr.Button("Teacher check", elem_id="review-teacher", scale=1)
    check = gr.HTML(check_html(None), elem_id="review-check")
    return ReviewComponents(
        view, opened, status, skill, author, since, until, text, rnd, flagged, search, page_info, newer, older, table,
        selected, bulk_reason, bulk_approve, bulk_reject, bulk_hold, bulk_check, detail, correction, edit_skill, reason,
        approve, approve_anyway, reject, save, hold_out, teacher, check, message,
    )  # fmt: skip


def build(state: AppState, demo: gr.Blocks) -> None:
    """Lay out the review tab and wire its events (called inside `with gr.Tab(...)`)."""
    h = ReviewHandlers(state)
    c = h.c = layout()
    filters = [c.status, c.skill, c.author, c.since, c.until, c.text, c.round, c.flagged]
    page = [c.view, c.table, c.page_info, c.newer, c.older, c.selected, c.skill, c.author, c.message]
    opened = [c.opened, c.detail, c.correction, c.edit_skill, c.check, c.save, c.approve, c.approve_anyway, c.reject,
              c.hold_out, c.teacher]  # fmt: skip
    quiet = {"show_progress": "hidden"}

    # Everything that refills the edit fields first locks them (and the actions) in the browser, at once, with no
    # server round trip; the refill unlocks them. Nothing typed meanwhile can be overwritten or go to the wrong row.
    locked = h.locked()
    lock = f"() => Array({len(locked)}).fill({{__type__: 'update', interactive: false}})"

    def on(trigger: Any, fn: Any, inputs: list[Any] | None, outputs: list[Any], **kw: Any) -> None:
        if set(locked) <= set(outputs):
            trigger(None, None, locked, js=lock, **quiet)
        trigger(fn, inputs, outputs, **{**quiet, **kw})

    demo.load(h.on_load, None, page + opened, **quiet)
    on(c.search.click, h.search, filters, page + opened)
    on(c.text.submit, h.search, filters, page + opened)
    on(c.older.click, h.older, [c.view], page)
    on(c.newer.click, h.newer, [c.view], page)
    on(c.table.select, h.open_row, [c.view], opened + [c.message])

    after = page + opened
    on(c.approve.click, h.approve, [c.view, c.opened], after)
    on(c.approve_anyway.click, h.approve_anyway, [c.view, c.opened], after)
    on(c.reject.click, h.reject, [c.view, c.opened, c.reason], after + [c.reason])
    on(c.hold_out.click, h.hold_out, [c.view, c.opened, c.edit_skill], after)
    on(c.save.click, h.save, [c.view, c.opened, c.correction, c.edit_skill], after)
    on(c.teacher.click, h.teacher_check, [c.view, c.opened], [c.table, c.check, c.message], show_progress="minimal")
    for button, action in ((c.bulk_approve, "approve"), (c.bulk_reject, "reject"), (c.bulk_hold, "hold_out")):
        on(button.click, h.bulk_handler(action), [c.view, c.selected, c.bulk_reason], after)
    on(c.bulk_check.click, h.bulk_teacher_check, [c.view, c.selected], after, show_progress="minimal")
    review_ratings.build(state, demo)
