"""users.claims_issued_at: the `iat` of the token whose email and name are stored.

The upsert of a user refreshes email and name only from a token issued at or after the stored
one (statements.user_upsert), so an older but still valid token never rolls them back, on any
worker. Rows stored before this revision have NULL: the next token sets it. A nullable column
without a default: no table rewrite on PostgreSQL.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("claims_issued_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("claims_issued_at")
