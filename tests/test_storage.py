"""Storage: migrations from empty, repository round trips, concurrent writers, a database from a newer schema."""

from __future__ import annotations

import os
import sqlite3
import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from storage import demonstrations, users, versions
from storage.db import current_revision, head_revision, make_engine, transaction, upgrade
from storage.errors import ApprenticeError, Conflict, NotFound, SchemaTooNew
from storage.models import Base
from storage.search import is_search_object


def test_migrations_from_empty(database_url):
    eng = make_engine(database_url)
    assert current_revision(eng) is None
    assert upgrade(eng) == head_revision()
    assert current_revision(eng) == head_revision()
    upgrade(eng)  # idempotent
    tables = set(inspect(eng).get_table_names())
    if eng.dialect.name == "sqlite":
        with eng.connect() as conn:
            assert conn.execute(text("pragma journal_mode")).scalar() == "wal"
            assert conn.execute(text("pragma foreign_keys")).scalar() == 1
    expected = {"users", "api_keys", "conversations", "messages", "feedback", "demonstrations", "skills", "probes"}
    expected |= {"model_versions", "training_rounds", "round_demonstrations", "eval_results", "leases"}
    assert expected <= tables
    with eng.connect() as conn:  # the migrations build exactly the schema storage/models.py declares
        opts = {"include_name": lambda name, *_: not is_search_object(name)}  # as storage/migrations/env.py has it
        assert compare_metadata(MigrationContext.configure(conn, opts=opts), Base.metadata) == []


def test_upgrading_a_0001_database_keeps_what_its_rounds_learned(database_url):
    from alembic import command

    from storage.db import _alembic_config
    from storage.rounds import ever_learned_demo_ids, round_demonstrations

    eng = make_engine(database_url)
    command.upgrade(_alembic_config(eng), "0001")
    with transaction(eng) as s:
        s.execute(
            text(
                "insert into demonstrations (id, messages, original_answer, corrected_answer, status, note, created) "
                "values (1, '[{\"role\": \"user\", \"content\": \"Q?\"}]', '', 'A.', 'approved', '', '2026-01-01')"
            )
        )
        s.execute(
            text(
                "insert into training_rounds (id, status, method, parent_version, hyperparameters, owner, progress, "
                "steps, metrics, error, created) values (1, 'succeeded', 'sdft', 'v0', '{}', 'x', 1, '[]', '{}', '', "
                "'2026-01-01')"
            )
        )
        s.execute(text("insert into round_demonstrations (round_id, demonstration_id, replay) values (1, 1, false)"))
    assert upgrade(eng) == head_revision()
    assert [r.answer for r in round_demonstrations(eng, round_id=1)] == ["A."]  # what the round trained on
    assert ever_learned_demo_ids(eng) == {1}
    command.downgrade(_alembic_config(eng), "0001")  # no table rebuild: the lineage rows stay
    with eng.connect() as conn:
        assert conn.execute(text("select round_id, demonstration_id from round_demonstrations")).all() == [(1, 1)]


def test_newer_schema_is_refused(database_url):
    eng = make_engine(database_url)
    upgrade(eng)
    with transaction(eng) as s:
        s.execute(text("update alembic_version set version_num='9999_future'"))
    with pytest.raises(SchemaTooNew, match="newer"):
        upgrade(eng)


def test_users_round_trip(engine):
    user = users.create_user(engine, name="ann", role="admin", password="correct horse")
    assert users.get_user(engine, name="ann").role == "admin"
    assert "correct horse" not in user.password_hash and user.password_hash.startswith("scrypt$")
    assert users.authenticate(engine, name="ann", password="correct horse").id == user.id
    assert users.authenticate(engine, name="ann", password="wrong password") is None
    key = users.create_api_key(engine, name="ann")
    assert users.user_for_api_key(engine, key=key).name == "ann"
    assert users.user_for_api_key(engine, key=key + "x") is None
    with pytest.raises(Conflict, match="already exists"):
        users.create_user(engine, name="ann", role="user", password="another one")
    with pytest.raises(ApprenticeError, match="unknown role"):
        users.create_user(engine, name="bo", role="root", password="whatever1")
    with pytest.raises(NotFound):
        users.get_user(engine, name="nobody")


def test_demonstration_round_trip_and_validation(engine):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of Veltoria?"}]
    demo = demonstrations.create_demonstration(
        engine, messages=msgs, corrected_answer="Quellmar.", original_answer="Paris.", skill="geo"
    )
    [back] = demonstrations.list_demonstrations(engine, status="pending")
    assert (back.id, back.messages, back.corrected_answer, back.skill) == (demo.id, msgs, "Quellmar.", "geo")
    with pytest.raises(ApprenticeError, match="unknown role"):
        demonstrations.create_demonstration(engine, messages=[{"role": "bot", "content": "x"}], corrected_answer="y")
    with pytest.raises(ApprenticeError, match="last message"):
        demonstrations.create_demonstration(
            engine, messages=[{"role": "assistant", "content": "x"}], corrected_answer="y"
        )
    with pytest.raises(ApprenticeError, match="cannot be empty"):
        demonstrations.create_demonstration(engine, messages=msgs, corrected_answer="  ")


def test_sixteen_threads_writing_demonstrations_all_land(engine):
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            for j in range(10):
                demonstrations.create_demonstration(
                    engine, messages=[{"role": "user", "content": f"q{i}-{j}"}], corrected_answer=f"a{i}-{j}"
                )
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    landed = demonstrations.list_demonstrations(engine, limit=1000)
    assert sorted(d.corrected_answer for d in landed) == sorted(f"a{i}-{j}" for i in range(16) for j in range(10))


def test_a_conversation_continues_from_the_corrections_unless_rejected(engine):
    from storage import conversations, review

    ann = users.create_user(engine, name="ann", role="user", password="password-1")
    conv = conversations.create_conversation(engine, user_id=ann.id)
    conversations.add_message(engine, conversation_id=conv.id, role="user", content="Capital of Veltoria?")
    conversations.add_message(engine, conversation_id=conv.id, role="assistant", content="Paris.", response_id="r-1")
    conversations.add_message(engine, conversation_id=conv.id, role="user", content="Its river?")
    second = conversations.add_message(engine, conversation_id=conv.id, role="assistant", content="The Seine.")
    first = conversations.correct_reply(engine, user_id=ann.id, response_id="r-1", correction="Quellmar.")
    later = conversations.correct_reply(engine, user_id=ann.id, message_id=second.id, correction="The Vell.")
    # The later demonstration's context is the conversation as the user saw it: the first reply corrected.
    assert later.messages[1] == {"role": "assistant", "content": "Quellmar."}
    assert [t["content"] for t in conversations.turns(engine, conversation_id=conv.id, user_id=ann.id)] == [
        "Capital of Veltoria?",
        "Quellmar.",
        "Its river?",
        "The Vell.",
    ]
    stored = conversations.get_messages(engine, conversation_id=conv.id, user_id=ann.id)
    assert [m.content for m in stored][1::2] == ["Paris.", "The Seine."]  # what the model said stays on record
    review.reject(engine, demo_id=first.id, reviewer_id=None)
    assert conversations.turns(engine, conversation_id=conv.id, user_id=ann.id)[1]["content"] == "Paris."
    review.approve(engine, demo_id=later.id, reviewer_id=None)  # corrected again after approval: a second one
    again = conversations.correct_reply(engine, user_id=ann.id, message_id=second.id, correction="The Vellwater.")
    assert again.id != later.id
    assert conversations.turns(engine, conversation_id=conv.id, user_id=ann.id)[3]["content"] == "The Vellwater."
    review.reject(engine, demo_id=again.id, reviewer_id=None)  # the approved correction still stands
    assert conversations.turns(engine, conversation_id=conv.id, user_id=ann.id)[3]["content"] == "The Vell."


def test_versions_base_and_activation(engine):
    assert versions.active_version(engine).name == versions.BASE_VERSION
    assert versions.ensure_base_version(engine).name == versions.BASE_VERSION
    assert [v.name for v in versions.list_versions(engine)] == [versions.BASE_VERSION]
    with pytest.raises(NotFound):
        versions.set_active(engine, name="v9")


def test_ungated_candidates_are_a_rounds_versions_without_a_verdict_or_a_note(engine):
    from storage import evals, rounds

    def round_version(name: str) -> None:
        rnd = rounds.create_round(engine, method="sft", parent_version="v0", hyperparameters={}, owner="t", demo_ids=[])
        rounds.mark_running(engine, round_id=rnd.id)
        rounds.succeed_round(
            engine, round_id=rnd.id, version=name, adapter_path=f"/nowhere/{name}", checksum="x", metrics={}
        )

    for name in ("v1", "v2", "v3"):
        round_version(name)
    versions.create_version(engine, name="by-hand", adapter_path="/nowhere/by-hand", parent="v0")  # no round
    assert [v.name for v in versions.ungated_candidates(engine)] == ["v1", "v2", "v3"]
    evals.record_gate(engine, candidate="v1", promote=False, reason="rejected: general dropped")
    versions.set_reason(engine, name="v2", reason="not gated: left a candidate")
    assert [v.name for v in versions.ungated_candidates(engine)] == ["v3"]
    assert versions.get_version(engine, name="v2").reason == "not gated: left a candidate"
    with pytest.raises(NotFound):
        versions.set_reason(engine, name="v9", reason="x")


def test_correct_reply_keeps_context_refuses_others_and_dedupes(engine):
    from storage import conversations

    ann = users.create_user(engine, name="ann", role="user", password="password-1")
    bob = users.create_user(engine, name="bob", role="user", password="password-2")
    conv = conversations.create_conversation(engine, user_id=ann.id)
    conversations.add_message(engine, conversation_id=conv.id, role="user", content="Capital of Veltoria?")
    reply = conversations.add_message(
        engine, conversation_id=conv.id, role="assistant", content="Paris.", model_version="v0", response_id="r-1"
    )
    demo = conversations.correct_reply(engine, user_id=ann.id, response_id="r-1", correction="Quellmar.", skill="geo")
    assert demo.messages == [{"role": "user", "content": "Capital of Veltoria?"}]
    assert (demo.original_answer, demo.corrected_answer, demo.status) == ("Paris.", "Quellmar.", "pending")
    again = conversations.correct_reply(engine, user_id=ann.id, message_id=reply.id, correction="It is Quellmar.")
    assert again.id == demo.id and again.corrected_answer == "It is Quellmar." and again.skill == "geo"
    assert len(demonstrations.list_demonstrations(engine)) == 1
    with pytest.raises(NotFound):
        conversations.correct_reply(engine, user_id=bob.id, response_id="r-1", correction="Mine now.")
    with pytest.raises(NotFound):
        conversations.correct_reply(engine, user_id=ann.id, response_id="r-404", correction="x")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_sqlite_write_is_flushed_to_disk_before_transaction_returns(engine, monkeypatch):
    """SQLite commits at synchronous=NORMAL inside the writers' turn; `transaction` then fdatasyncs the WAL itself
    (group commit), so the commit is on disk when the caller acknowledges it. Without WAL: SQLite's own FULL."""
    from storage.models import Skill

    path = engine.url.database
    calls: list[tuple[str, int]] = []
    fdatasync = os.fdatasync

    def watched(fd: int) -> None:
        with sqlite3.connect(path) as other:  # what another process reads at the moment of the flush
            committed = other.execute("select count(*) from skills where name = 'flushed'").fetchone()[0]
        calls.append((os.readlink(f"/proc/self/fd/{fd}"), committed))
        fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", watched)
    with transaction(engine) as s:
        s.add(Skill(name="flushed"))
    assert calls == [(os.path.realpath(path) + "-wal", 1)]  # after the commit, before returning
    with engine.connect() as conn:
        assert conn.exec_driver_sql("pragma synchronous").scalar() == 1  # NORMAL: the flush above is the fsync
    memory = make_engine("sqlite://")
    with memory.connect() as conn:
        assert conn.exec_driver_sql("pragma synchronous").scalar() == 2  # FULL
    with transaction(memory):
        pass
    assert len(calls) == 1
