"""uploads.discarded_at: uploads whose bytes the worker's sweep deletes (of deleted messages, or
never sent in time)

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("uploads", sa.Column("discarded_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(op.f("ix_uploads_discarded_at"), "uploads", ["discarded_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_uploads_discarded_at"), table_name="uploads")
    op.drop_column("uploads", "discarded_at")
