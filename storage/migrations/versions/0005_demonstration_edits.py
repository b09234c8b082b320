"""demonstration edits: who changed a demonstration's correction or skill, when, from what to what

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "demonstration_edits",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "demonstration_id", sa.Integer(), sa.ForeignKey("demonstrations.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("editor_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_demonstration_edits_demonstration_id", "demonstration_edits", ["demonstration_id"])


def downgrade() -> None:
    op.drop_index("ix_demonstration_edits_demonstration_id", table_name="demonstration_edits")
    op.drop_table("demonstration_edits")
