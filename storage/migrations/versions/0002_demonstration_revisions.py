"""demonstration revisions: an edited correction is learned again

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("demonstrations", "round_demonstrations"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column("revision", sa.Integer(), server_default="1", nullable=False))


def downgrade() -> None:
    for table in ("demonstrations", "round_demonstrations"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column("revision")
