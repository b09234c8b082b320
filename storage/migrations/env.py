"""Alembic environment: runs against the engine handed in by storage.db.upgrade (never a URL from a config file)."""

from alembic import context

from storage.models import Base
from storage.search import is_search_object

engine = context.config.attributes["engine"]
# One transaction from reading the current revision to the last step: on SQLite (BEGIN IMMEDIATE, see
# storage.db.upgrade) processes starting at once then migrate one after the other, each seeing the others' work.
with engine.connect() as connection, connection.begin():
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        include_name=lambda name, *_: not is_search_object(name),  # migration 0006's index objects, not in the models
    )
    context.run_migrations()
