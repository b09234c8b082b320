"""The Review tab's event handlers (app/ui/review.py lays the tab out and wires these).

Every handler checks the role first (`auth.require_role`: admins and reviewers), then calls storage (reads through
app/services/queries.py, writes through storage/review.py) or app/services/answers.py. What the table shows is kept in
a `view` state: the filter, the page cursor and the ids on the page; after an action the same page is read again,
so the acted-on row leaves a "pending" queue and the next one opens. Errors become a line above the detail.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import gradio as gr

from app.services import answers, queries
from app.services.review import review_many, review_one
from app.state import AppState
from app.ui import auth
from app.ui.admin_view import check_html, demo_html, message, queue_rows
from app.ui.review_history import history_html
from storage import review
from storage.demo_history import edit_history
from storage.errors import ApprenticeError, SecondLook
from storage.models import DEMO_STATUSES, User
from storage.queue import QueueFilter, queue_authors, queue_skills

REVIEW_ROLES = ("admin", "reviewer")
STATUS_CHOICES = [(s.replace("_", "-"), s) for s in DEMO_STATUSES] + [("any status", "*")]
CHECK_CHOICES = [("any", "*"), ("⚑ flagged: the teacher disagrees", "flagged"), ("learnable", "learnable"),
                 ("already known", "known"), ("not checked yet", "unchecked")]  # fmt: skip
PAGE = 25


def parse_day(text: str | None, what: str) -> str | None:
    """'2026-05-01' or '2026-05-01 13:00' -> ISO text kept in the view; None when empty."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text).isoformat(sep=" ")
    except ValueError:
        raise ApprenticeError(f"{what}: write a date as YYYY-MM-DD (optionally HH:MM), not {text!r}") from None


def filter_dict(
    status: str, skill: str, author: int | None, since: str, until: str, text: str, round_id: str, check: str = "*"
) -> dict[str, Any]:
    """The filter form as a JSON-able dict (kept in the view state), validated."""
    rnd = (round_id or "").strip().lstrip("#")
    if rnd and not rnd.isdigit():
        raise ApprenticeError(f"learned in round: give a round number, not {round_id!r}")
    return {
        "status": None if status in (None, "*") else status,
        "skill": None if skill in (None, "*") else skill,
        "author_id": int(author) if author else None,
        "since": parse_day(since, "from"),
        "until": parse_day(until, "before"),
        "text": (text or "").strip() or None,
        "round_id": int(rnd) if rnd else None,
        "check": None if check in (None, "*") else check,
    }


def to_filter(values: dict[str, Any]) -> QueueFilter:
    day = lambda v: dt.datetime.fromisoformat(v) if v else None  # noqa: E731
    return QueueFilter(**{**values, "since": day(values.get("since")), "until": day(values.get("until"))})


class ReviewHandlers:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self.c: Any = None

    def user(self, request: gr.Request | None) -> User:
        return auth.require_role(self.state, request, REVIEW_ROLES)

    # --- the table -----------------------------------------------------------------------------------------------

    def page(self, values: dict[str, Any], cursor: dict[str, int], note: str = "") -> dict:
        """Outputs that show one page of the queue for filter `values` at `cursor` ({}, {"before"} or {"after"})."""
        c = self.c
        data = queries.read_queue(
            self.state.db, to_filter(values), before_id=cursor.get("before"), after_id=cursor.get("after"), limit=PAGE
        )
        items = data["items"]
        if not items and cursor:  # the page emptied (everything on it was reviewed): start again from the top
            return self.page(values, {}, note)
        first = data["first_index"] + 1
        shown = f"{first}–{first + len(items) - 1}" if items else "0"
        what = values.get("status") or "all"
        info = f"Showing **{shown}** of **{data['total']:,}** ({what.replace('_', '-')} demonstrations)"
        skills = [("any skill", "*"), ("no skill", ""), *[(s, s) for s in queue_skills(self.state.db)]]
        authors = [("anyone", 0), *[(name, i) for i, name in queue_authors(self.state.db)]]
        view = {"filter": values, "cursor": cursor, "ids": [d["id"] for d in items]}
        return {
            c.view: view,
            c.table: queue_rows(items),
            c.page_info: info,
            c.newer: gr.update(interactive=data["newer"] is not None),
            c.older: gr.update(interactive=data["older"] is not None),
            c.selected: gr.update(choices=[(f"#{d['id']}", d["id"]) for d in items], value=[]),
            c.skill: gr.update(choices=skills),
            c.author: gr.update(choices=authors),
            c.message: note,
        }

    def locked(self) -> list[Any]:
        """What the browser locks from a click until the answer that refills them arrives (review.py: a row opened,
        a search, an action): the edit fields, and the actions, which would act on the previously opened row."""
        c = self.c
        return [c.correction, c.edit_skill, c.save, c.approve, c.approve_anyway, c.reject, c.hold_out, c.teacher]

    def unlocked(self) -> dict:
        return {x: gr.update(interactive=True) for x in self.locked()}

    def failed(self, error: ApprenticeError) -> dict:
        """The error above the detail, and the (unchanged) open demonstration's fields unlocked again."""
        return {**self.unlocked(), self.c.message: message(str(error), error=True)}

    def opened(self, demo_id: int | None) -> dict:
        c = self.c
        hidden = {**self.unlocked(), c.approve_anyway: gr.update(visible=False, interactive=True)}
        if demo_id is None:
            return {**hidden, c.opened: None, c.detail: demo_html(None),
                    c.correction: gr.update(value="", interactive=True), c.check: check_html(None)}  # fmt: skip
        d = queries.read_demo(self.state.db, demo_id)
        return {
            **hidden,
            c.opened: demo_id,
            c.detail: demo_html(d) + history_html(edit_history(self.state.db, demo_id=demo_id)),
            c.correction: gr.update(value=d["corrected_answer"], interactive=True),
            c.edit_skill: gr.update(choices=queue_skills(self.state.db), value=d["skill"] or "", interactive=True),
            c.check: check_html(d["teacher_check"]),
        }

    def refreshed(self, view: dict[str, Any], acted: list[int], note: str) -> dict:
        """The same page read again after an action, with the next demonstration opened."""
        old_ids = view.get("ids") or []
        out = self.page(view.get("filter") or {}, view.get("cursor") or {}, message(note))
        new_ids = out[self.c.view]["ids"]
        at = min((old_ids.index(i) for i in acted if i in old_ids), default=0)
        remaining = [i for i in new_ids if i not in acted] or new_ids
        following = [i for i in old_ids[at:] if i in remaining]
        return {**out, **self.opened(following[0] if following else (remaining[0] if remaining else None))}

    def on_load(self, request: gr.Request) -> dict:
        try:
            self.user(request)
        except ApprenticeError:
            return {self.c.message: ""}  # the tab is hidden from this user; nothing to show
        return self.search("pending", "*", 0, "", "", "", "", "*", request)

    def search(
        self,
        status: str,
        skill: str,
        author: int | None,
        since: str,
        until: str,
        text: str,
        round_id: str,
        check: str,
        request: gr.Request,
    ) -> dict:
        try:
            self.user(request)
            out = self.page(filter_dict(status, skill, author, since, until, text, round_id, check), {})
            ids = out[self.c.view]["ids"]
            return {**out, **self.opened(ids[0] if ids else None)}
        except ApprenticeError as e:
            return self.failed(e)

    def older(self, view: dict[str, Any], request: gr.Request) -> dict:
        return self.move(view, "before", -1, request)

    def newer(self, view: dict[str, Any], request: gr.Request) -> dict:
        return self.move(view, "after", 0, request)

    def move(self, view: dict[str, Any], key: str, edge: int, request: gr.Request) -> dict:
        try:
            self.user(request)
            ids = view.get("ids") or []
            if not ids:
                raise ApprenticeError("no page to move from; search first")
            return self.page(view.get("filter") or {}, {key: ids[edge]})
        except ApprenticeError as e:
            return {self.c.message: message(str(e), error=True)}

    def open_row(self, view: dict[str, Any], event: gr.SelectData, request: gr.Request) -> dict:
        try:
            self.user(request)
            row = event.index[0] if isinstance(event.index, list | tuple) else event.index
            ids = view.get("ids") or []
            if not isinstance(row, int) or not 0 <= row < len(ids):
                raise ApprenticeError("that row is gone; search again")
            return {**self.opened(ids[row]), self.c.message: ""}
        except ApprenticeError as e:
            return self.failed(e)

    # --- actions -------------------------------------------------------------------------------------------------

    def act(self, view: dict[str, Any], demo_id: int | None, request: gr.Request, do: Any, reraise: tuple = ()) -> dict:
        try:
            user = self.user(request)
            if demo_id is None:
                raise ApprenticeError("open a demonstration first (click a row of the queue)")
            note = do(user, int(demo_id))
            return self.refreshed(view, [int(demo_id)], note)
        except reraise:
            raise
        except ApprenticeError as e:
            return self.failed(e)

    def approve(self, view: dict[str, Any], demo_id: int | None, request: gr.Request, confirm: bool = False) -> dict:
        """Approve; one the teacher check flags is refused until the reviewer confirms with "Approve anyway"."""

        def do(user: User, i: int) -> str:
            review_one(
                self.state.db, user, i, "approve", forbid_self=self.state.settings.review_forbid_self_approval,
                confirm_flagged=confirm,
            )  # fmt: skip
            flagged = " although its teacher check flagged it" if confirm else ""
            return f"demonstration #{i} approved{flagged}; it will be learned in the next round"

        try:
            return self.act(view, demo_id, request, do, reraise=(SecondLook,))
        except SecondLook as e:
            note = f"{e}: read the teacher check below; if the correction is right, press “Approve anyway”"
            return {
                **self.failed(ApprenticeError(note)),
                self.c.approve_anyway: gr.update(visible=True, interactive=True),
            }

    def approve_anyway(self, view: dict[str, Any], demo_id: int | None, request: gr.Request) -> dict:
        return self.approve(view, demo_id, request, confirm=True)

    def reject(self, view: dict[str, Any], demo_id: int | None, reason: str, request: gr.Request) -> dict:
        def do(user: User, i: int) -> str:
            review.reject(self.state.db, demo_id=i, reviewer_id=user.id, reason=reason or "")
            return f"demonstration #{i} rejected" + (f" ({reason.strip()})" if (reason or "").strip() else "")

        out = self.act(view, demo_id, request, do)
        return {**out, self.c.reason: ""} if self.c.view in out else out

    def hold_out(self, view: dict[str, Any], demo_id: int | None, skill: str | None, request: gr.Request) -> dict:
        def do(user: User, i: int) -> str:
            probe = review.hold_out(self.state.db, demo_id=i, reviewer_id=user.id, skill=skill or None)
            return f"demonstration #{i} held out: it is now probe {probe.id} of skill {probe.skill} ({probe.grader})"

        return self.act(view, demo_id, request, do)

    def save(
        self, view: dict[str, Any], demo_id: int | None, correction: str, skill: str | None, request: gr.Request
    ) -> dict:
        def do(user: User, i: int) -> str:
            review.edit(self.state.db, demo_id=i, corrected_answer=correction, skill=skill or "", editor_id=user.id)
            return f"demonstration #{i} saved"

        out = self.act(view, demo_id, request, do)
        if demo_id is not None and self.c.opened in out:  # stay on the edited demonstration
            out.update(self.opened(int(demo_id)))
        return out

    async def teacher_check(self, view: dict[str, Any], demo_id: int | None, request: gr.Request) -> dict:
        c = self.c
        try:
            await asyncio.to_thread(self.user, request)
            if demo_id is None:
                raise ApprenticeError("open a demonstration first (click a row of the queue)")
            d = await answers.teacher_check(self.state, int(demo_id))
            flt = to_filter(view.get("filter") or {})
            items = await asyncio.to_thread(queries.read_queue, self.state.db, flt, **self.cursor(view))
            note = "the teacher still disagrees (flagged)" if d["teacher_check"]["teacher_disagrees"] else "checked"
            return {c.table: queue_rows(items["items"]), c.check: check_html(d["teacher_check"]), c.message: message(
                f"teacher check of #{demo_id}: {note}")}  # fmt: skip
        except ApprenticeError as e:
            return {c.message: message(str(e), error=True)}

    async def bulk_teacher_check(self, view: dict[str, Any], selected: list[int], request: gr.Request) -> dict:
        """The teacher check of each selected demonstration, one after the other (the model answers twice each)."""
        try:
            await asyncio.to_thread(self.user, request)
            ids = [int(i) for i in selected or []]
            if not ids:
                raise ApprenticeError("select at least one demonstration")
            flagged = []
            for demo_id in ids:
                d = await answers.teacher_check(self.state, demo_id)
                if d["teacher_check"]["teacher_disagrees"]:
                    flagged.append(f"#{demo_id}")
            note = f"teacher check of {len(ids)} demonstration(s): " + (
                f"flagged {', '.join(flagged)}" if flagged else "the teacher agrees on every one"
            )
            return await asyncio.to_thread(self.refreshed, view, [], note)
        except ApprenticeError as e:
            return self.failed(e)

    @staticmethod
    def cursor(view: dict[str, Any]) -> dict[str, Any]:
        cursor = view.get("cursor") or {}
        return {"before_id": cursor.get("before"), "after_id": cursor.get("after"), "limit": PAGE}

    def bulk_handler(self, action: str) -> Any:
        def bulk(view: dict[str, Any], selected: list[int], reason: str, request: gr.Request) -> dict:
            try:
                user = self.user(request)
                ids = [int(i) for i in selected or []]
                result = review_many(
                    self.state.db, user, ids, action, reason=reason or "",
                    forbid_self=self.state.settings.review_forbid_self_approval,
                )  # fmt: skip
                verb = {"approve": "approved", "reject": "rejected", "hold_out": "held out"}[action]
                note = f"{len(result['done'])} demonstration(s) {verb}"
                if result["failed"]:
                    note += "; not done: " + "; ".join(f"#{f['id']}: {f['error']}" for f in result["failed"])
                if action == "approve" and any("is flagged" in f["error"] for f in result["failed"]):
                    note += " (open a flagged one to approve it after a second look)"
                return self.refreshed(view, ids, note)
            except ApprenticeError as e:
                return self.failed(e)

        return bulk
