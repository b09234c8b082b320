"""user administration: a user can be disabled and has a last sign-in; an API key has a last use and can be revoked

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # ADD COLUMN, not a batch rebuild: no table is dropped, so no ON DELETE CASCADE can fire.
    op.add_column("users", sa.Column("disabled", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column("users", sa.Column("last_sign_in", sa.DateTime(), nullable=True))
    op.add_column("api_keys", sa.Column("last_used", sa.DateTime(), nullable=True))
    op.add_column("api_keys", sa.Column("revoked", sa.DateTime(), nullable=True))


def downgrade() -> None:
    # SQLite >= 3.35 drops a column without a rebuild
    op.execute("ALTER TABLE api_keys DROP COLUMN revoked")
    op.execute("ALTER TABLE api_keys DROP COLUMN last_used")
    op.execute("ALTER TABLE users DROP COLUMN last_sign_in")
    op.execute("ALTER TABLE users DROP COLUMN disabled")
