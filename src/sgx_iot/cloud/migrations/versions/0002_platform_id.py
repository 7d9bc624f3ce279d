"""Bind a gateway name to the platform that first registered it: the PPID of its PCK certificate.

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gateways") as batch:
        batch.add_column(sa.Column("platform_id", sa.String(length=64), nullable=True))
    with op.batch_alter_table("attestations") as batch:
        batch.add_column(sa.Column("platform_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attestations") as batch:
        batch.drop_column("platform_id")
    with op.batch_alter_table("gateways") as batch:
        batch.drop_column("platform_id")
