"""Initial schema: gateways, attestations, challenges, readings, audit log.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "gateways",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("public_key_pem", sa.Text(), nullable=False),
        sa.Column("key_sha256", sa.String(length=64), nullable=False),
        sa.Column("platform", sa.String(length=16), nullable=False),
        sa.Column("mrenclave", sa.String(length=64), nullable=False),
        sa.Column("mrsigner", sa.String(length=64), nullable=False),
        sa.Column("isv_prod_id", sa.Integer(), nullable=False),
        sa.Column("isv_svn", sa.Integer(), nullable=False),
        sa.Column("tcb_status", sa.String(length=64), nullable=False),
        sa.Column("advisory_ids", sa.Text(), nullable=False),
        sa.Column("policy_id", sa.String(length=80), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.Column("revoked_reason", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateways")),
        sa.UniqueConstraint("name", name=op.f("uq_gateways_name")),
    )
    op.create_table(
        "attestations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gateway_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("public_key_pem", sa.Text(), nullable=False),
        sa.Column("key_sha256", sa.String(length=64), nullable=False),
        sa.Column("mrenclave", sa.String(length=64), nullable=False),
        sa.Column("mrsigner", sa.String(length=64), nullable=False),
        sa.Column("isv_prod_id", sa.Integer(), nullable=False),
        sa.Column("isv_svn", sa.Integer(), nullable=False),
        sa.Column("tcb_status", sa.String(length=64), nullable=False),
        sa.Column("advisory_ids", sa.Text(), nullable=False),
        sa.Column("policy_id", sa.String(length=80), nullable=False),
        sa.Column("nonce", sa.String(length=128), nullable=False),
        sa.Column("ear", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["gateway_id"], ["gateways.id"], name=op.f("fk_attestations_gateway_id_gateways"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attestations")),
    )
    op.create_index(op.f("ix_attestations_gateway_id"), "attestations", ["gateway_id"])
    op.create_table(
        "challenges",
        sa.Column("nonce", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("used_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_challenges")),
    )
    op.create_index(op.f("ix_challenges_expires_at"), "challenges", ["expires_at"])
    op.create_table(
        "readings",
        sa.Column("id", BigId, nullable=False),
        sa.Column("gateway_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("key_sha256", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["gateway_id"], ["gateways.id"], name=op.f("fk_readings_gateway_id_gateways"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_readings")),
        sa.UniqueConstraint("gateway_id", "seq", name="uq_readings_gateway_seq"),
    )
    op.create_index("ix_readings_timestamp", "readings", ["timestamp"])
    op.create_table(
        "audit_log",
        sa.Column("id", BigId, nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("gateway", sa.String(length=64), nullable=True),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("remote", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("readings")
    op.drop_table("challenges")
    op.drop_table("attestations")
    op.drop_table("gateways")
