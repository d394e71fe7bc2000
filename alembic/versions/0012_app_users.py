"""Your app's users: users and conversations carry the app's own ids (external_id) and metadata,
users can be deactivated and erased (and then have no password), messages can be system messages
(no sender), conversations the app's backend made have no creator, and server keys for /server/*

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.alter_column("password_hash", existing_type=sa.String(length=255), nullable=True)
        batch.add_column(sa.Column("external_id", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("metadata", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("deactivated_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_unique_constraint(op.f("uq_users_external_id"), ["external_id"])
    with op.batch_alter_table("conversations") as batch:
        batch.alter_column("created_by", existing_type=sa.Uuid(), nullable=True)
        batch.add_column(sa.Column("external_id", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("metadata", sa.JSON(), nullable=True))
        batch.create_unique_constraint(op.f("uq_conversations_external_id"), ["external_id"])
    with op.batch_alter_table("messages") as batch:
        batch.alter_column("sender_id", existing_type=sa.Uuid(), nullable=True)
        batch.add_column(sa.Column("kind", sa.String(length=16), server_default="user", nullable=False))
    op.create_table(
        "server_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_server_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_server_keys_key_hash")),
        sa.UniqueConstraint("name", name=op.f("uq_server_keys_name")),
    )


def downgrade() -> None:
    op.drop_table("server_keys")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("kind")
        batch.alter_column("sender_id", existing_type=sa.Uuid(), nullable=False)
    with op.batch_alter_table("conversations") as batch:
        batch.drop_constraint(op.f("uq_conversations_external_id"), type_="unique")
        batch.drop_column("metadata")
        batch.drop_column("external_id")
        batch.alter_column("created_by", existing_type=sa.Uuid(), nullable=False)
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint(op.f("uq_users_external_id"), type_="unique")
        batch.drop_column("erased_at")
        batch.drop_column("deactivated_at")
        batch.drop_column("metadata")
        batch.drop_column("external_id")
        batch.alter_column("password_hash", existing_type=sa.String(length=255), nullable=False)
