"""outbox rows name their queue

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 09:00:00

Rows written by the release before this one have no queue name; the relay still sends them
through the actor registry of the process it runs in (deploy skew).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("queue_name", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("queue_name")
