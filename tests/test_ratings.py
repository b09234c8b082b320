"""Ratings count: thumbs with reasons in the export (their own kind and beside the demonstrations), the "rated down,
no correction yet" list a reviewer turns into a correction, and the share of each version's replies rated up and down.
Also the teacher check's states in the queue and the second look a flagged approval asks for (storage and services).

    .venv/bin/python -m pytest -q tests/test_ratings.py
"""

from __future__ import annotations

import json

import pytest

from app.services import queries
from app.services.review import review_many, review_one
from learner.exchange import detect_kind, export_text, import_text
from storage import conversations, ratings, review, teacher_checks
from storage.demonstrations import create_demonstration
from storage.errors import ApprenticeError, Conflict, SecondLook
from storage.queue import QueueFilter, queue_ids
from storage.users import create_user, get_user


def chat(engine, user_id: int, question: str, reply: str, version: str = "v0", earlier: list | None = None) -> int:
    """One stored exchange (a new conversation, or `earlier` turns first); returns the reply's message id."""
    conv = conversations.create_conversation(engine, user_id=user_id)
    for role, text in earlier or []:
        conversations.add_message(engine, conversation_id=conv.id, role=role, content=text, model_version=None)
    conversations.add_message(engine, conversation_id=conv.id, role="user", content=question)
    return conversations.add_message(
        engine, conversation_id=conv.id, role="assistant", content=reply, model_version=version,
        response_id=f"chatcmpl-{conv.id}",
    ).id  # fmt: skip


@pytest.fixture()
def people(engine):
    for name, role in (("ann", "admin"), ("rex", "reviewer"), ("bob", "user"), ("eve", "user")):
        create_user(engine, name=name, role=role, password="long-password")
    return {name: get_user(engine, name=name) for name in ("ann", "rex", "bob", "eve")}


def test_rated_down_replies_wait_until_a_reviewer_corrects_them(engine, people):
    bob, eve, rex = people["bob"].id, people["eve"].id, people["rex"].id
    wrong = chat(engine, bob, "Capital of Zorbia?", "Paris.", earlier=[("user", "Hi"), ("assistant", "Hello!")])
    fixed_by_user = chat(engine, bob, "2 + 2?", "5")
    changed_mind = chat(engine, eve, "Colour of the sky?", "Green.")
    liked = chat(engine, eve, "Largest planet?", "Jupiter.", version="v1")
    conversations.add_feedback(engine, user_id=bob, message_id=wrong, rating=-1, reason="it is Quillmark <b>!</b>")
    conversations.add_feedback(engine, user_id=bob, message_id=fixed_by_user, rating=-1, reason="wrong sum")
    conversations.correct_reply(engine, user_id=bob, message_id=fixed_by_user, correction="4")
    conversations.add_feedback(engine, user_id=eve, message_id=changed_mind, rating=-1)
    conversations.add_feedback(engine, user_id=eve, message_id=changed_mind, rating=1)  # the latest one counts
    conversations.add_feedback(engine, user_id=eve, message_id=liked, rating=1, reason="right")

    page = ratings.rated_down(engine)
    assert [r.message_id for r in page.rows] == [wrong] and page.total == 1 and page.older is None
    row = page.rows[0]
    assert (row.user, row.reason, row.question, row.reply, row.version) == (
        "bob", "it is Quillmark <b>!</b>", "Capital of Zorbia?", "Paris.", "v0")  # fmt: skip
    detail = ratings.rated_reply(engine, message_id=wrong)
    assert detail["messages"][-1] == {"role": "user", "content": "Capital of Zorbia?"} and len(detail["messages"]) == 3
    assert detail["ratings"][0]["reason"] == "it is Quillmark <b>!</b>" and detail["demonstration"] is None

    with pytest.raises(ApprenticeError, match="empty"):
        ratings.correct_rated_reply(engine, message_id=wrong, reviewer_id=rex, correction="  ")
    demo = ratings.correct_rated_reply(engine, message_id=wrong, reviewer_id=rex, correction="Quillmark.", skill="geo")
    assert (demo.status, demo.author_id, demo.original_answer, demo.skill) == ("pending", rex, "Paris.", "geo")
    assert demo.messages == detail["messages"] and demo.source_message_id == wrong
    assert ratings.rated_down(engine).total == 0  # corrected: it leaves the list
    with pytest.raises(Conflict, match=f"demonstration #{demo.id}"):
        ratings.correct_rated_reply(engine, message_id=wrong, reviewer_id=rex, correction="Again.")

    shown = queries.read_rated_down(engine)
    assert shown == {"total": 0, "older": None, "items": []}


def test_rated_down_pages_newest_first(engine, people):
    bob = people["bob"].id
    ids = [chat(engine, bob, f"Question {i}?", f"Wrong {i}.") for i in range(5)]
    for m in ids:
        conversations.add_feedback(engine, user_id=bob, message_id=m, rating=-1)
    first = ratings.rated_down(engine, limit=2)
    second = ratings.rated_down(engine, limit=2, before_id=first.older)
    third = ratings.rated_down(engine, limit=2, before_id=second.older)
    assert [r.message_id for r in first.rows + second.rows + third.rows] == ids[::-1]
    assert first.total == 5 and third.older is None


def test_share_of_replies_rated_up_and_down_per_version(engine, people):
    bob = people["bob"].id
    for version, verdicts in (("v0", [1, -1, -1, None]), ("v1", [1, 1, None, None, None])):
        for i, verdict in enumerate(verdicts):
            m = chat(engine, bob, f"{version} question {i}", "A reply.", version=version)
            if verdict is not None:
                conversations.add_feedback(engine, user_id=bob, message_id=m, rating=-verdict)
                conversations.add_feedback(engine, user_id=bob, message_id=m, rating=verdict)  # changed their mind
    counts = ratings.version_ratings(engine)
    assert counts == {"v0": {"replies": 4, "up": 1, "down": 2}, "v1": {"replies": 5, "up": 2, "down": 0}}
    from storage.versions import create_version

    create_version(engine, name="v1", adapter_path="/nowhere", parent="v0")
    rows = {r["version"]: r for r in queries.ratings_per_version(engine)}
    assert rows["v0"]["up_share"] == 0.25 and rows["v0"]["down_share"] == 0.5 and rows["v0"]["rated"] == 3
    assert rows["v1"]["up_of_rated"] == 1.0 and rows["v1"]["down_share"] == 0.0


def test_ratings_are_exported_on_their_own_and_beside_the_demonstrations(engine, people):
    bob = people["bob"].id
    corrected = chat(engine, bob, "Capital of Zorbia?", "Paris.", earlier=[("system", "Be brief.")])
    rated_only = chat(engine, bob, "Sky?", "Blue.", version="v1")
    conversations.add_feedback(engine, user_id=bob, message_id=corrected, rating=-1, reason="it is Quillmark")
    demo = conversations.correct_reply(engine, user_id=bob, message_id=corrected, correction="Quillmark.")
    conversations.add_feedback(engine, user_id=bob, message_id=rated_only, rating=1, reason="ünïcode ✓")
    create_demonstration(engine, messages=[{"role": "user", "content": "Imported?"}], corrected_answer="Yes.")

    text, count = export_text(engine, kind="ratings")
    rows = [json.loads(line) for line in text.splitlines()]
    assert count == 2 and [r["rating"] for r in rows] == [-1, 1]
    assert rows[0] | {"created": None} == {
        "response_id": rows[0]["response_id"], "version": "v0", "rating": -1, "reason": "it is Quillmark",
        "user": "bob", "created": None, "reply": "Paris.", "demonstration": demo.id,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of Zorbia?"}],
    }  # fmt: skip
    assert rows[1]["reason"] == "ünïcode ✓" and rows[1]["demonstration"] is None and "✓" in text  # not escaped

    demos = {json.loads(line)["answer"]: json.loads(line) for line in export_text(engine, kind="demos")[0].splitlines()}
    assert [(r["rating"], r["reason"], r["user"]) for r in demos["Quillmark."]["ratings"]] == [
        (-1, "it is Quillmark", "bob")
    ]
    assert demos["Yes."]["ratings"] == []
    # a ratings file is recognised and refused by an import with a clear error (nothing to attach it to)
    assert detect_kind(text) == "ratings"
    with pytest.raises(ApprenticeError, match="ratings are exported, not imported"):
        import_text(engine, text)
    # an exported demonstration file still imports back (its ratings are ignored)
    again = import_text(engine, export_text(engine, kind="demos")[0])
    assert again.bad == [] and again.unchanged == 2


def test_check_states_in_the_queue_and_what_the_background_check_picks(engine, people):
    q = [{"role": "user", "content": "Capital of Zorbia?"}]
    make = lambda answer: create_demonstration(engine, messages=q, corrected_answer=answer).id  # noqa: E731
    flagged, learnable, known, unchecked, edited = (make(a) for a in ("F.", "L.", "K.", "U.", "E."))
    approved = create_demonstration(engine, messages=q, corrected_answer="A.", status="approved").id
    for demo_id, answer, student, teacher in ((flagged, "F.", 0.0, 0.1), (learnable, "L.", 0.2, 0.9),
                                              (known, "K.", 0.8, 0.9), (edited, "E.", 0.0, 0.0)):  # fmt: skip
        teacher_checks.record_check(
            engine, demo_id=demo_id, version="v0", correction=answer, student_answer="s", teacher_answer="t",
            student_agreement=student, teacher_agreement=teacher,
        )  # fmt: skip
    review.edit(engine, demo_id=edited, corrected_answer="E, edited.")
    states = {s: queue_ids(engine, QueueFilter(status=None, check=s)) for s in ("flagged", "learnable", "known",
                                                                                "unchecked")}  # fmt: skip
    assert states == {"flagged": [flagged], "learnable": [learnable], "known": [known],
                      "unchecked": [approved, edited, unchecked]}  # fmt: skip
    with pytest.raises(ApprenticeError, match="unknown teacher check state"):
        QueueFilter(check="maybe")
    # the background check takes pending ones without a check of their text as it reads now, oldest first
    assert teacher_checks.unchecked_ids(engine, limit=10) == [unchecked, edited]
    assert teacher_checks.unchecked_ids(engine, limit=1, skip=[unchecked]) == [edited]
    shown = queries.read_demo(engine, flagged)
    assert shown["flagged"] is True and queries.read_demo(engine, edited)["flagged"] is False


def test_approving_a_flagged_demonstration_asks_for_a_second_look(engine, people):
    rex = people["rex"]
    q = [{"role": "user", "content": "Capital of Zorbia?"}]
    flagged = create_demonstration(engine, messages=q, corrected_answer="Quillmark.").id
    fine = create_demonstration(engine, messages=q, corrected_answer="Quillmark!").id
    teacher_checks.record_check(
        engine, demo_id=flagged, version="v0", correction="Quillmark.", student_answer="Paris",
        teacher_answer="Paris", student_agreement=0.0, teacher_agreement=0.0,
    )  # fmt: skip
    with pytest.raises(SecondLook, match=f"demonstration {flagged} is flagged.*agreement 0.00.*confirm"):
        review_one(engine, rex, flagged, "approve")
    result = review_many(engine, rex, [flagged, fine], "approve")
    assert result["done"] == [fine] and result["failed"][0]["id"] == flagged
    assert "flagged" in result["failed"][0]["error"]
    review_one(engine, rex, flagged, "approve", confirm_flagged=True)
    assert queries.read_demo(engine, flagged)["status"] == "approved"
    # storage's own default (imports, the learner's tools) does not ask
    other = create_demonstration(engine, messages=q, corrected_answer="Q.").id
    teacher_checks.record_check(
        engine, demo_id=other, version="v0", correction="Q.", student_answer="", teacher_answer="",
        student_agreement=0.0, teacher_agreement=0.0,
    )  # fmt: skip
    assert review.approve(engine, demo_id=other, reviewer_id=rex.id).status == "approved"
