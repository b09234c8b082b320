"""The teacher check on arrival, on our real server (uvicorn, tiny model, SQLite): demonstrations waiting before the
server started (a restart) and ones arriving while it runs get their check in the background, an edited one is
checked again, approved ones are left alone, one the engine refuses is skipped without stopping the others, and
chat keeps answering meanwhile.

    .venv/bin/python -m pytest -q tests/test_arrival_checks.py
"""

from __future__ import annotations

import time

import httpx

from app.settings import Settings
from storage import review, teacher_checks
from storage.db import make_engine, upgrade
from storage.demonstrations import create_demonstration
from storage.versions import ensure_base_version
from tests.serving_helpers import running_server

Q = [{"role": "user", "content": "Capital of Zorbia?"}]


def checked(db, ids: list[int]) -> dict[int, str]:
    """Each of these demonstrations' latest check: the correction it checked."""
    return {i: c.correction for i, c in teacher_checks.latest_checks(db, demo_ids=ids).items()}


def wait_for(predicate, what: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.2)


def test_new_demonstrations_are_checked_in_the_background(tiny_model_dir, tmp_path):
    db = make_engine(f"sqlite:///{tmp_path / 'apprentice.db'}")
    upgrade(db)
    ensure_base_version(db)
    waiting = [create_demonstration(db, messages=Q, corrected_answer=f"Quillmark {i}.").id for i in range(3)]
    approved = create_demonstration(db, messages=Q, corrected_answer="Approved.", status="approved").id
    too_long = create_demonstration(
        db, messages=[{"role": "user", "content": "word " * 2000}], corrected_answer="Too long to check."
    ).id
    db.dispose()
    settings = Settings(
        data_dir=tmp_path, model=tiny_model_dir, device="cpu", max_new_tokens=8, max_input_tokens=512,
        learn_in_server=False, teacher_check_on_arrival=True, teacher_check_batch=2, teacher_check_interval_s=0.2,
    )  # fmt: skip
    with running_server(settings) as srv:
        db = srv.state.db
        reply = httpx.post(
            srv.url + "/v1/chat/completions", headers=srv.headers("bob"), timeout=60,
            json={"messages": [{"role": "user", "content": "Hello?"}], "max_tokens": 4},
        )  # fmt: skip
        assert reply.status_code == 200, reply.text  # chat answers while the checks run
        arrived = create_demonstration(db, messages=Q, corrected_answer="Arrived while serving.").id
        wait_for(lambda: len(checked(db, [*waiting, arrived])) == 4, "the pending demonstrations checked")
        got = checked(db, [*waiting, arrived, approved, too_long])
        assert got == {**{i: f"Quillmark {n}." for n, i in enumerate(waiting)}, arrived: "Arrived while serving."}
        check = teacher_checks.latest_checks(db, demo_ids=[arrived])[arrived]
        assert check.version == "v0" and isinstance(check.teacher_answer, str)

        review.edit(db, demo_id=waiting[0], corrected_answer="Quillmark, edited.")
        wait_for(lambda: checked(db, [waiting[0]]) == {waiting[0]: "Quillmark, edited."}, "the edit checked again")
        assert teacher_checks.unchecked_ids(db, limit=10) == [too_long]  # skipped, and only that one
    assert approved not in checked(make_engine(f"sqlite:///{tmp_path / 'apprentice.db'}"), [approved])
