"""Replicas belong to the token that registered them, so no other token can fake their reports.

Revision ID: e47b4249d7f8
Revises: 09349cffce73
Create Date: 2026-12-06 01:15:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e47b4249d7f8"
down_revision: str | None = "09349cffce73"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Rows already there keep no owner: the next token to report as that replica adopts it, so
    # replicas running across the upgrade keep reporting.
    with op.batch_alter_table("replicas") as batch:
        batch.add_column(sa.Column("token_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_replicas_token_id_tokens"), "tokens", ["token_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("replicas") as batch:
        batch.drop_constraint(op.f("fk_replicas_token_id_tokens"), type_="foreignkey")
        batch.drop_column("token_id")
