"""Review actions on demonstrations: one winner when two reviewers act at once, held-out demonstrations become
probes, and edits."""

from __future__ import annotations

import threading

import pytest

from storage import review
from storage.demonstrations import create_demonstration, list_demonstrations
from storage.errors import ApprenticeError, Conflict, NotFound
from storage.probes import list_probes
from storage.users import create_user

Q = [{"role": "user", "content": "Capital of Zorbia?"}]


def demo(engine, answer: str = "Quillmark", original: str = "I don't know.", skill: str | None = "facts"):
    return create_demonstration(engine, messages=Q, corrected_answer=answer, original_answer=original, skill=skill)


def test_approving_twice_concurrently_has_one_winner(engine):
    ann = create_user(engine, name="ann", role="reviewer", password="long-password")
    bo = create_user(engine, name="bo", role="admin", password="long-password")
    for _ in range(5):
        d = demo(engine)
        barrier, outcomes = threading.Barrier(2), []

        def act(user_id: int, demo_id: int = d.id, barrier=barrier, outcomes=outcomes) -> None:
            barrier.wait()
            try:
                outcomes.append(("won", review.approve(engine, demo_id=demo_id, reviewer_id=user_id).reviewer_id))
            except Conflict as e:
                outcomes.append(("lost", str(e)))

        threads = [threading.Thread(target=act, args=(u.id,)) for u in (ann, bo)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(o[0] for o in outcomes) == ["lost", "won"]
        assert dict(outcomes)["lost"] == f"demonstration {d.id} is already approved"
        winner = dict(outcomes)["won"]
        stored = next(x for x in list_demonstrations(engine) if x.id == d.id)
        assert stored.status == "approved" and stored.reviewer_id == winner


def test_reject_keeps_the_reason_and_blocks_approval(engine):
    d = demo(engine)
    rejected = review.reject(engine, demo_id=d.id, reviewer_id=None, reason="<script>alert(1)</script> wrong")
    assert rejected.status == "rejected" and rejected.note == "<script>alert(1)</script> wrong"
    with pytest.raises(Conflict, match="already rejected"):
        review.approve(engine, demo_id=d.id, reviewer_id=None)
    with pytest.raises(NotFound):
        review.approve(engine, demo_id=9999, reviewer_id=None)


def test_hold_out_turns_a_demonstration_into_one_probe(engine):
    d = demo(engine)
    probe = review.hold_out(engine, demo_id=d.id, reviewer_id=None)
    assert (probe.skill, probe.grader, probe.answer) == ("facts", "choice", "Quillmark")
    assert probe.choices == ["Quillmark", "I don't know."] and probe.source == f"demonstration:{d.id}"
    with pytest.raises(Conflict, match="already held_out"):
        review.hold_out(engine, demo_id=d.id, reviewer_id=None)
    plain = review.hold_out(engine, demo_id=demo(engine, original="").id, reviewer_id=None)
    assert (plain.grader, plain.answer, plain.choices) == ("contains", "Quillmark", None)
    prefix = review.hold_out(engine, demo_id=demo(engine, original="Quill").id, reviewer_id=None)
    assert prefix.grader == "contains", "a choice between a reply and its own beginning cannot be scored"
    keyed = review.hold_out(engine, demo_id=demo(engine).id, reviewer_id=None, answer="Quill", skill="geo")
    assert (keyed.grader, keyed.answer, keyed.skill) == ("contains", "Quill", "geo")
    assert len(list_probes(engine)) == 4
    with pytest.raises(ApprenticeError, match="needs a skill"):
        review.hold_out(engine, demo_id=demo(engine, skill=None).id, reviewer_id=None)
    assert len(list_probes(engine)) == 4, "a refused hold-out leaves nothing behind"


def test_edit_changes_text_and_skill_until_the_demonstration_is_closed(engine):
    d = demo(engine)
    edited = review.edit(engine, demo_id=d.id, corrected_answer="Quillmark City", skill="geo")
    assert (edited.corrected_answer, edited.skill, edited.status) == ("Quillmark City", "geo", "pending")
    review.approve(engine, demo_id=d.id, reviewer_id=None)
    assert review.edit(engine, demo_id=d.id, skill="").skill is None
    review_rejected = review.reject(engine, demo_id=demo(engine).id, reviewer_id=None)
    with pytest.raises(Conflict):
        review.edit(engine, demo_id=review_rejected.id, corrected_answer="x")
    with pytest.raises(ApprenticeError, match="cannot be empty"):
        review.edit(engine, demo_id=d.id, corrected_answer="  ")
