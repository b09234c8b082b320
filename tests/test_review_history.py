"""Review hygiene: every edit of a demonstration is recorded with its editor, time and before/after (SQLite and
PostgreSQL), shown under it in the Review tab; with review_forbid_self_approval on, nobody approves a correction
they wrote or last edited, one by one, in bulk or through the admin API's handler path."""

from __future__ import annotations

import gradio as gr
import pytest

from app.services.review import review_many
from app.settings import Settings
from app.state import AppState
from app.ui import review as review_tab
from app.ui.review_handlers import ReviewHandlers
from storage import people, review, users
from storage.demo_history import edit_history
from storage.demonstrations import create_demonstration
from storage.errors import Forbidden

Q = [{"role": "user", "content": "Capital of Zorbia?"}]


@pytest.fixture()
def crew(engine):
    return {n: users.create_user(engine, name=n, role=r, password="password-123").id
            for n, r in (("bob", "user"), ("rita", "reviewer"), ("rex", "reviewer"))}  # fmt: skip


def test_edits_are_recorded_with_editor_time_and_change(engine, crew):
    d = create_demonstration(engine, messages=Q, corrected_answer="Quillmark", skill="geo", author_id=crew["bob"])
    assert edit_history(engine, demo_id=d.id) == []
    review.edit(engine, demo_id=d.id, corrected_answer="Quillmark.", editor_id=crew["rita"])
    review.edit(engine, demo_id=d.id, corrected_answer="Quillmark.", skill="", editor_id=crew["rex"])
    review.edit(engine, demo_id=d.id, skill="", editor_id=crew["rex"])  # nothing changed: nothing recorded
    history = edit_history(engine, demo_id=d.id)
    assert [(h["editor"], h["changes"]) for h in history] == [
        ("rita", {"corrected_answer": ["Quillmark", "Quillmark."]}),
        ("rex", {"skill": ["geo", None]}),
    ]
    assert history[0]["when"] <= history[1]["when"]
    people.remove_user(engine, name="rita")
    assert edit_history(engine, demo_id=d.id)[0]["editor"] is None  # the edit stays, without the name


def test_no_approving_ones_own_correction_when_the_setting_is_on(engine, crew):
    mine = create_demonstration(engine, messages=Q, corrected_answer="Quillmark", author_id=crew["rita"])
    with pytest.raises(Forbidden, match="is yours"):
        review.approve(engine, demo_id=mine.id, reviewer_id=crew["rita"], forbid_self=True)
    assert review.approve(engine, demo_id=mine.id, reviewer_id=crew["rex"], forbid_self=True).status == "approved"

    edited = create_demonstration(engine, messages=Q, corrected_answer="Quilmark", author_id=crew["bob"])
    review.edit(engine, demo_id=edited.id, corrected_answer="Quillmark", editor_id=crew["rex"])
    review.edit(engine, demo_id=edited.id, skill="geo", editor_id=crew["rita"])  # the skill only: not her text
    with pytest.raises(Forbidden):
        review.approve(engine, demo_id=edited.id, reviewer_id=crew["rex"], forbid_self=True)
    reviewer = users.get_user(engine, name="rex")
    result = review_many(engine, reviewer, [edited.id], "approve", forbid_self=True)
    assert result["done"] == [] and "is yours" in result["failed"][0]["error"]
    assert review.approve(engine, demo_id=edited.id, reviewer_id=crew["rita"], forbid_self=True).status == "approved"

    off = create_demonstration(engine, messages=Q, corrected_answer="Quillmark", author_id=crew["rita"])
    assert review.approve(engine, demo_id=off.id, reviewer_id=crew["rita"]).status == "approved"  # the default


@pytest.mark.parametrize("backend", ["sqlite"])
def test_review_tab_shows_the_history_and_applies_the_setting(engine, crew, tmp_path):
    settings = Settings(data_dir=tmp_path, review_forbid_self_approval=True)
    state = AppState(settings=settings, db=engine, engine=None)  # type: ignore[arg-type]
    with gr.Blocks():
        h = ReviewHandlers(state)
        h.c = review_tab.layout()
    d = create_demonstration(engine, messages=Q, corrected_answer="Quillmark", author_id=crew["rita"])
    assert "Not edited" in h.opened(d.id)[h.c.detail]
    h.save({}, d.id, "Quillmark <b>!", "geo", gr.Request(username="rex"))
    detail = h.opened(d.id)[h.c.detail]
    assert "<b>rex</b> changed correction: “Quillmark” → “Quillmark &lt;b&gt;!”" in detail
    refused = h.approve({}, d.id, gr.Request(username="rex"))[h.c.message]
    assert "is yours" in refused
    assert "is yours" in h.approve({}, d.id, gr.Request(username="rita"))[h.c.message]  # she wrote it first
    users.create_user(engine, name="ann", role="admin", password="password-123")
    assert "approved" in h.approve({}, d.id, gr.Request(username="ann"))[h.c.message]
