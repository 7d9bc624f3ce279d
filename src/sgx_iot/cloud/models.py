"""The cloud's relational schema (SQLAlchemy 2 declarative). Times are Unix seconds (BIGINT), the same on SQLite
and PostgreSQL. The schema is created and changed only by the Alembic migrations in ``migrations/``.

* ``gateways`` — one row per gateway name: its current attested key (only a successful attestation sets it),
  the identity it was attested with and the platform (PPID) the name is bound to; ``revoked_at`` once an
  administrator revoked it.
* ``attestations`` — every successful attestation (key history), with its EAR token.
* ``challenges`` — single-use nonces with their expiry (``used_at`` set by the registration that consumed it).
* ``readings`` — accepted signed readings, unique per (gateway, seq), with the key that verified them.
* ``audit_log`` — refused attempts and administrative actions (never keys, tokens or payloads).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with a naming convention (stable constraint names for migrations)."""

    metadata = MetaData(naming_convention=NAMING)


class GatewayRow(Base):
    """A registered gateway and its current attested key."""

    __tablename__ = "gateways"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    public_key_pem: Mapped[str] = mapped_column(Text)
    key_sha256: Mapped[str] = mapped_column(String(64))
    platform: Mapped[str] = mapped_column(String(16))
    mrenclave: Mapped[str] = mapped_column(String(64))
    mrsigner: Mapped[str] = mapped_column(String(64))
    isv_prod_id: Mapped[int] = mapped_column(Integer)
    isv_svn: Mapped[int] = mapped_column(Integer)
    tcb_status: Mapped[str] = mapped_column(String(64))
    advisory_ids: Mapped[str] = mapped_column(Text)  # JSON list
    policy_id: Mapped[str] = mapped_column(String(80))
    platform_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # PPID: the name is bound to it
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    revoked_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)


class AttestationRow(Base):
    """One successful attestation of a gateway key."""

    __tablename__ = "attestations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    public_key_pem: Mapped[str] = mapped_column(Text)
    key_sha256: Mapped[str] = mapped_column(String(64))
    mrenclave: Mapped[str] = mapped_column(String(64))
    mrsigner: Mapped[str] = mapped_column(String(64))
    isv_prod_id: Mapped[int] = mapped_column(Integer)
    isv_svn: Mapped[int] = mapped_column(Integer)
    tcb_status: Mapped[str] = mapped_column(String(64))
    advisory_ids: Mapped[str] = mapped_column(Text)
    policy_id: Mapped[str] = mapped_column(String(80))
    nonce: Mapped[str] = mapped_column(String(128))
    ear: Mapped[str] = mapped_column(Text)
    platform_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class ChallengeRow(Base):
    """A nonce handed out by ``POST /v1/challenges``."""

    __tablename__ = "challenges"
    nonce: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)
    used_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class ReadingRow(Base):
    """An accepted signed reading."""

    __tablename__ = "readings"
    __table_args__ = (
        UniqueConstraint("gateway_id", "seq", name="uq_readings_gateway_seq"),
        Index("ix_readings_timestamp", "timestamp"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    timestamp: Mapped[int] = mapped_column(BigInteger)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    key_sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[int] = mapped_column(BigInteger)


class AuditRow(Base):
    """A refused attempt or an administrative action."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[int] = mapped_column(BigInteger, index=True)
    action: Mapped[str] = mapped_column(String(32))
    gateway: Mapped[str | None] = mapped_column(String(64), nullable=True)
    code: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    remote: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON
