"""The review queue's text search (storage/search.py) on SQLite and PostgreSQL: a case-insensitive substring of the
correction, the original answer or the conversation, found through each backend's index; every character taken
literally (%, _, quotes, FTS5 syntax); short queries; edits and deletes keep the index in step; migration 0006 indexes
the rows a database already holds.

    .venv/bin/python -m pytest -q tests/test_search.py
"""

from __future__ import annotations

import json

from alembic import command
from sqlalchemy import delete, func, select, text, update

from storage import review
from storage.db import _alembic_config, make_engine, transaction, upgrade
from storage.demonstrations import create_demonstration
from storage.models import Demonstration
from storage.queue import QueueFilter, queue_ids, queue_page
from storage.search import POSTGRES_INDEXES

TEXTS = [  # (conversation's user turn, original answer, correction)
    ("Capital of Zorbia?", "I do not know.", "Quillmark is the capital."),
    ("How much off?", "Nothing.", "50% off, today only"),
    ("How much off?", "Nothing.", "500 off"),
    ("Name the variable", "x", "use snake_case: max_len"),
    ("Name the variable", "x", "use snakeXcase: maxXlen"),
    ("Quote him", "no", 'he said "hi" and it\'s fine'),
    ("Windows path?", "/tmp", "C:\\temp\\new"),
    ("FTS5 syntax?", "none", "a AND b OR NEAR(c d) * -e col:f ^g"),
    ("Where is Zürich?", "In Zürich, Switzerland.", "Zürich is in Switzerland"),
]


def add(engine, question: str, original: str, answer: str) -> int:
    messages = [{"role": "user", "content": question}]
    return create_demonstration(engine, messages=messages, corrected_answer=answer, original_answer=original).id


def found(engine, query: str, status: str | None = None) -> set[int]:
    return set(queue_ids(engine, QueueFilter(status=status, text=query)))


def in_step(engine) -> None:
    """On SQLite, FTS5 compares its index with the demonstrations table (rank 1: the external content too)."""
    if engine.dialect.name == "sqlite":
        with transaction(engine) as s:
            s.execute(
                text("INSERT INTO demonstrations_search (demonstrations_search, rank) VALUES ('integrity-check', 1)")
            )


def test_search_finds_substrings_of_each_text_in_any_case(engine):
    ids = [add(engine, *t) for t in TEXTS]
    assert found(engine, "quillMARK IS") == {ids[0]}  # the correction
    assert found(engine, "do NOT kno") == {ids[0]}  # the original answer
    assert found(engine, "capital of zorb") == {ids[0]}  # the conversation
    assert found(engine, "content") == set(ids)  # the conversation's JSON text, keys included, as before the index
    assert found(engine, "switzerland") == {ids[8]} and found(engine, "zürich is") == {ids[8]}
    assert found(engine, "nowhere at all") == set()
    page = queue_page(engine, QueueFilter(status=None, text="OFF"), limit=1)
    assert page.total == 2 and [r.demo.id for r in page.rows] == [ids[2]] and page.older == ids[2]
    nxt = queue_page(engine, QueueFilter(status=None, text="OFF"), limit=1, before_id=page.older)
    assert [r.demo.id for r in nxt.rows] == [ids[1]] and (nxt.first_index, nxt.total, nxt.older) == (1, 2, None)
    back = queue_page(engine, QueueFilter(status=None, text="OFF"), limit=1, after_id=ids[1])
    assert [r.demo.id for r in back.rows] == [ids[2]] and (back.first_index, back.total, back.newer) == (0, 2, None)
    review.reject(engine, demo_id=ids[1], reviewer_id=None)
    assert found(engine, "off", status="rejected") == {ids[1]} and found(engine, "off", status="pending") == {ids[2]}


def test_search_takes_every_character_literally(engine):
    ids = [add(engine, *t) for t in TEXTS]
    assert found(engine, "50%") == {ids[1]}  # not "50 followed by anything"
    assert found(engine, "snake_case") == {ids[3]}  # not "snake, any character, case"
    assert found(engine, '"hi" and') == {ids[5]} and found(engine, "it's") == {ids[5]}
    assert found(engine, "C:\\temp\\") == {ids[6]}
    assert found(engine, "NEAR(c d) *") == {ids[7]} and found(engine, "col:f ^g") == {ids[7]}
    assert found(engine, "a AND b") == {ids[7]} and found(engine, "b OR") == {ids[7]}
    assert found(engine, '"') == {*ids}  # the quotes of the conversation's JSON text
    assert found(engine, '"""') == set()


def test_short_queries_find_the_same_without_the_index(engine):
    ids = [add(engine, *t) for t in TEXTS]  # under 3 characters there is no trigram to look up: a scan
    assert found(engine, "%") == {ids[1]} and found(engine, "_") == {ids[3]}
    assert found(engine, "50") == {ids[1], ids[2]} and found(engine, "qU") == {ids[0], ids[5]}
    assert found(engine, "ü") == {ids[8]} and found(engine, "zü") == {ids[8]}
    assert found(engine, " ") == set(ids)  # blank: no text filter


def test_edits_and_deletes_keep_the_index_in_step(engine):
    ids = [add(engine, *t) for t in TEXTS]
    review.edit(engine, demo_id=ids[0], corrected_answer="Quellmar, on the coast.")
    assert found(engine, "quillmark") == set() and found(engine, "quellmar, on") == {ids[0]}
    review.approve(engine, demo_id=ids[0], reviewer_id=None)  # a review touches no searched text
    assert found(engine, "quellmar") == {ids[0]}
    with transaction(engine) as s:
        s.execute(update(Demonstration).where(Demonstration.id == ids[2]).values(original_answer="Everything."))
        renamed = [{"role": "user", "content": "Rename it"}]
        s.execute(update(Demonstration).where(Demonstration.id == ids[3]).values(messages=renamed))
        s.execute(delete(Demonstration).where(Demonstration.id == ids[1]))
    assert found(engine, "everything") == {ids[2]} and found(engine, "nothing") == set()
    assert found(engine, "rename it") == {ids[3]} and found(engine, "name the var") == {ids[4]}
    assert found(engine, "off") == {ids[2]}
    in_step(engine)


def test_the_search_is_served_by_an_index(engine):
    ids = [add(engine, *t) for t in TEXTS]
    where = QueueFilter(status=None, text="quillmark").conditions(dialect=engine.dialect.name)
    count = select(func.count()).select_from(Demonstration).where(*where)
    sql = str(count.compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            plan = " ".join(row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
            assert "demonstrations_search VIRTUAL TABLE" in plan, plan
        else:
            conn.exec_driver_sql("SET enable_seqscan = off")  # a tiny table: show what the planner can use
            plan = "\n".join(conn.exec_driver_sql(f"EXPLAIN {sql}").scalars())
            for index in sorted(POSTGRES_INDEXES):
                assert f"Bitmap Index Scan on {index}" in plan, plan
    assert found(engine, "quillmark") == {ids[0]}


def insert_rows(eng, rows: list[tuple[str, str, str]]) -> list[int]:
    """Demonstrations written as an older schema would (plain SQL, around storage/); their ids."""
    sql = text(
        "insert into demonstrations (messages, original_answer, corrected_answer, status, note, created) "
        "values (:messages, :original, :answer, 'pending', '', '2026-01-01') returning id"
    )
    with transaction(eng) as s:
        return [
            s.execute(
                sql, {"messages": json.dumps([{"role": "user", "content": q}]), "original": o, "answer": a}
            ).scalar_one()
            for q, o, a in rows
        ]


def test_migration_0006_indexes_the_rows_already_there(database_url):
    eng = make_engine(database_url)
    command.upgrade(_alembic_config(eng), "0005")
    ids = insert_rows(eng, TEXTS)
    upgrade(eng)
    assert found(eng, "QUILLMARK") == {ids[0]} and found(eng, "capital of zorbia") == {ids[0]}
    assert found(eng, "50%") == {ids[1]}
    in_step(eng)
    new = add(eng, "Capital of Quillmark?", "", "Zorbia")
    assert found(eng, "quillmark") == {ids[0], new}
    command.downgrade(_alembic_config(eng), "0005")
    [unindexed] = insert_rows(eng, [("Is Quillmark big?", "", "No.")])  # written while there is no index
    upgrade(eng)
    assert found(eng, "quillmark") == {ids[0], new, unindexed}
    in_step(eng)
    eng.dispose()
