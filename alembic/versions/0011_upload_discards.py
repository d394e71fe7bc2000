"""uploads.linked_at (stored with its message) and uploads.discarded_at (its bytes to be deleted
by the workers' sweep: of a deleted message, or not stored with a message in time)

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
    op.add_column("uploads", sa.Column("linked_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("uploads", sa.Column("discarded_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(op.f("ix_uploads_discarded_at"), "uploads", ["discarded_at"], unique=False)
    # Uploads of messages stored before this revision were linked by the worker that stored them.
    op.execute(
        "UPDATE uploads SET linked_at = created_at WHERE message_id IS NOT NULL"
        " AND EXISTS (SELECT 1 FROM messages WHERE messages.id = uploads.message_id)"
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_uploads_discarded_at"), table_name="uploads")
    op.drop_column("uploads", "discarded_at")
    op.drop_column("uploads", "linked_at")
