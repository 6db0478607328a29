"""app_secrets: keys every worker and restart shares (the cursor signing key).

Each is generated once, by whichever process needs it first (store.Store.shared_secret): the
list cursors' signing key of a deployment without BETTER_AUTH_SECRET or CURSOR_SECRET.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "app_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("app_secrets")
