"""an index on demonstrations.source_message_id: a correction looks up the reply's pending demonstration, the chat
reads each reply's correction, and deleting messages sets it NULL; at 100k demonstrations each was a table scan

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_demonstrations_source_message_id", "demonstrations", ["source_message_id"])


def downgrade() -> None:
    op.drop_index("ix_demonstrations_source_message_id", table_name="demonstrations")
