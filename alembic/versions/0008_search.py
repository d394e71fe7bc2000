"""search: a generated tsvector over message bodies, with a GIN index (Postgres only)

The column is computed by Postgres from `body`, so every write path (the worker's one-statement
batch, edits, deletes) keeps it right without knowing it exists. SQLite (dev mode) has no
full-text types: it searches with a plain match instead (chat/domain/search.py), and gets neither.

Adding a stored generated column rewrites the messages table under an exclusive lock: on a large
installation, run this migration in a quiet hour.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # 'simple': no stemming and no stop words. Chat is multilingual and short; an English
    # dictionary would drop "the who" and fold words of other languages wrongly.
    op.execute(
        "ALTER TABLE messages ADD COLUMN search_vector tsvector"
        " GENERATED ALWAYS AS (to_tsvector('simple', coalesce(body, ''))) STORED"
    )
    op.execute("CREATE INDEX ix_messages_search ON messages USING gin (search_vector)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX ix_messages_search")
    op.execute("ALTER TABLE messages DROP COLUMN search_vector")
