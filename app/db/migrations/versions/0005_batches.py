"""batches: a chunked run's fan-in and the jobs that are batch members

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-20 09:00:00

A chunked run keeps its batch (``chunking_runs.batch_id``), how many members its committed
chunks sent (``members``: the next chunk's first ordinal) and what its fan-in recorded once
complete (``summary``); a refresh job that an account sync made a member keeps its batch and
ordinal (``jobs.batch_id``, ``jobs.batch_ordinal``).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("chunking_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("batch_id", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("members", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("summary", sa.JSON(none_as_null=True), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("batch_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("batch_ordinal", sa.BigInteger(), nullable=True))
        batch_op.create_index(batch_op.f("ix_jobs_batch_id"), ["batch_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_batch_id"))
        batch_op.drop_column("batch_ordinal")
        batch_op.drop_column("batch_id")
    with op.batch_alter_table("chunking_runs", schema=None) as batch_op:
        batch_op.drop_column("summary")
        batch_op.drop_column("members")
        batch_op.drop_column("batch_id")
