"""outbox rows that cannot be sent are marked failed, with the reason

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08 09:00:00

A row whose actor is unknown or whose message the broker refuses is marked failed instead of
failing its whole relay batch; ``fintask outbox`` lists such rows.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db.models

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("failed_at", app.db.models.Timestamp(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("error", sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("error")
        batch_op.drop_column("failed_at")
