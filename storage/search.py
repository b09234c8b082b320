"""The review queue's text search: a case-insensitive substring of a demonstration's correction, original answer or
conversation (its messages as JSON text), as one ILIKE per text, with an index behind it on each backend.

SQLite: `demonstrations_search`, an FTS5 table with the trigram tokenizer over the three texts (external content: it
holds only the index; triggers keep it in step with `demonstrations`; migration 0006). A query of 3 or more characters
is looked up there as a phrase (its trigrams in a row: a substring, case folded), and the rows found are then checked
with the same ILIKE, so the index only narrows the rows: the results are exactly the ILIKE's (the tokenizer folds
case for all of Unicode, SQLite's ILIKE for ASCII only, so the index never misses a row the ILIKE matches). A
shorter query has no trigram to look up and scans every row (correct, slower; one or two letters match most rows).
PostgreSQL: pg_trgm's GIN trigram indexes on the three texts (migration 0006), which ILIKE uses by itself.

    .venv/bin/python -m pytest -q tests/test_search.py
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import column, func, or_, select, table

from storage.models import Demonstration

TABLE = "demonstrations_search"
POSTGRES_INDEXES = {f"ix_demonstrations_{name}_trgm" for name in ("corrected", "original", "messages")}
TRIGRAM = 3  # the trigram tokenizer indexes runs of 3 characters: a shorter query has nothing to look up

_fts = table(TABLE, column("rowid"), column(TABLE))


def is_search_object(name: str | None) -> bool:
    """The index objects of migration 0006, which the ORM models do not declare (left out of schema comparisons):
    the FTS5 table and its shadow tables on SQLite, the trigram indexes on PostgreSQL."""
    return bool(name) and (name.startswith(TABLE) or name in POSTGRES_INDEXES)


def text_condition(text: str, *, dialect: str) -> Any:
    """Demonstrations whose correction, original answer or conversation contains `text` (case-insensitive)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = f"%{escaped}%"
    ilike = or_(
        Demonstration.corrected_answer.ilike(pattern, escape="\\"),
        Demonstration.original_answer.ilike(pattern, escape="\\"),
        func.cast(Demonstration.messages, type_=Demonstration.note.type).ilike(pattern, escape="\\"),
    )
    if dialect != "sqlite" or len(text) < TRIGRAM:
        return ilike
    phrase = '"' + text.replace('"', '""') + '"'  # an FTS5 string: the text, every character taken literally
    found = select(_fts.c.rowid).where(_fts.c[TABLE].op("MATCH")(phrase))
    return Demonstration.id.in_(found) & ilike
