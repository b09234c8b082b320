"""the review queue's text search gets an index (storage/search.py): on SQLite an FTS5 trigram table kept in step by
triggers and filled from the rows already there; on PostgreSQL pg_trgm's GIN trigram indexes. At 100k demonstrations
a search scanned every row (about 0.2 s), twice per page.

A later migration that rebuilds `demonstrations` on SQLite (a batch "move and copy") drops these triggers with the old
table: it must create them again (TRIGGERS below) and rebuild the index.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = "corrected_answer, original_answer, messages"
TRIGGERS = {
    "demonstrations_search_insert": f"""
        CREATE TRIGGER demonstrations_search_insert AFTER INSERT ON demonstrations BEGIN
          INSERT INTO demonstrations_search (rowid, {COLUMNS})
          VALUES (new.id, new.corrected_answer, new.original_answer, new.messages);
        END""",
    # external content: the index forgets a row given exactly the values it indexed
    "demonstrations_search_delete": f"""
        CREATE TRIGGER demonstrations_search_delete AFTER DELETE ON demonstrations BEGIN
          INSERT INTO demonstrations_search (demonstrations_search, rowid, {COLUMNS})
          VALUES ('delete', old.id, old.corrected_answer, old.original_answer, old.messages);
        END""",
    # a review (status, reviewer, note) leaves the index alone
    "demonstrations_search_update": f"""
        CREATE TRIGGER demonstrations_search_update AFTER UPDATE OF id, {COLUMNS} ON demonstrations BEGIN
          INSERT INTO demonstrations_search (demonstrations_search, rowid, {COLUMNS})
          VALUES ('delete', old.id, old.corrected_answer, old.original_answer, old.messages);
          INSERT INTO demonstrations_search (rowid, {COLUMNS})
          VALUES (new.id, new.corrected_answer, new.original_answer, new.messages);
        END""",
}
POSTGRES_INDEXES = {
    "ix_demonstrations_corrected_trgm": "corrected_answer",
    "ix_demonstrations_original_trgm": "original_answer",
    "ix_demonstrations_messages_trgm": "(CAST(messages AS TEXT))",  # the expression the search's ILIKE uses
}


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            f"CREATE VIRTUAL TABLE demonstrations_search USING fts5({COLUMNS}, content='demonstrations', "
            "content_rowid='id', tokenize='trigram')"
        )
        for ddl in TRIGGERS.values():
            op.execute(ddl)
        op.execute("INSERT INTO demonstrations_search (demonstrations_search) VALUES ('rebuild')")
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")  # a trusted extension: a database owner may create it
    for name, expression in POSTGRES_INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON demonstrations USING gin ({expression} gin_trgm_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in TRIGGERS:
            op.execute(f"DROP TRIGGER {name}")
        op.execute("DROP TABLE demonstrations_search")
        return
    for name in POSTGRES_INDEXES:
        op.execute(f"DROP INDEX {name}")  # the extension stays: other objects may use it
