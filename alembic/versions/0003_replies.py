"""messages.reply_to, reply_count, last_reply_at: replies and threads

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode: SQLite (the dev mode) cannot add a foreign key in place; Postgres alters in place.
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("reply_to", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("reply_count", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_reply_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_foreign_key(op.f("fk_messages_reply_to_messages"), "messages", ["reply_to"], ["id"])
        # A thread is read in seq order: its replies by parent, then seq.
        batch.create_index(op.f("ix_messages_thread"), ["reply_to", "seq"])


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_index(op.f("ix_messages_thread"))
        batch.drop_constraint(op.f("fk_messages_reply_to_messages"), type_="foreignkey")
        batch.drop_column("last_reply_at")
        batch.drop_column("reply_count")
        batch.drop_column("reply_to")
