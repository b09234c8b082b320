"""learned answers: each lineage row keeps the corrected answer its round trained on, so an edited correction is
learned again

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
    # ADD COLUMN, not a batch rebuild: no table is dropped, so no ON DELETE CASCADE can fire.
    op.add_column("round_demonstrations", sa.Column("answer", sa.Text(), server_default="", nullable=False))
    op.execute(
        "UPDATE round_demonstrations SET answer = "
        "(SELECT corrected_answer FROM demonstrations WHERE demonstrations.id = round_demonstrations.demonstration_id)"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE round_demonstrations DROP COLUMN answer")  # SQLite >= 3.35; no rebuild
