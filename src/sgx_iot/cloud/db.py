"""Database engine, sessions and schema migrations.

``make_engine(url)`` accepts any SQLAlchemy URL: ``sqlite:///path/cloud.db`` (the default, a file under the
cloud's data folder; WAL journal, foreign keys on, busy timeout) or ``postgresql+psycopg://user@host/db``
(optionally confined to one schema through ``search_path``). ``migrate(engine)`` brings the schema to the latest
Alembic revision; the service runs it at startup.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from sgx_iot.errors import UsageError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def make_engine(url: str, *, schema: str | None = None) -> Engine:
    """An engine for ``url``; ``schema`` (PostgreSQL only) confines every table to that schema."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UsageError(f"{url!r} is not a database URL (e.g. sqlite:///cloud.db or "
                         "postgresql+psycopg://user@host/db)") from None
    backend = parsed.get_backend_name()
    # Never put statement parameters (EAR tokens, keys, payloads) in logs or exception messages.
    kwargs: dict[str, Any] = {"hide_parameters": True}
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        else:
            # An in-memory database exists once per connection: every thread (the store thread of ingest, the
            # request threads) must share the one connection, or each would see its own empty database.
            kwargs["poolclass"] = StaticPool
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    elif backend == "postgresql":
        kwargs["pool_pre_ping"] = True  # survive server restarts
        if schema is not None:
            if not _SCHEMA_RE.fullmatch(schema):
                raise UsageError(f"invalid PostgreSQL schema name {schema!r}")
            kwargs["connect_args"] = {"options": f"-csearch_path={schema}"}
    else:
        raise UsageError(f"unsupported database {backend!r}: use sqlite or postgresql")
    try:
        engine = create_engine(parsed, **kwargs)
    except ModuleNotFoundError as exc:
        raise UsageError(f"the database driver for {backend} is not installed: {exc}") from None
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: an acknowledged reading must survive a power cut too, not only a process crash (WAL + NORMAL
    # may lose the last commits on power loss). One fsync per ingested batch.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine`` (objects stay readable after commit)."""
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(engine: Engine | None = None) -> Config:
    """An Alembic configuration pointing at the packaged migrations (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database schema to ``revision`` (default: the latest)."""
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Downgrade the database schema to ``revision`` (default: empty). Destroys data: for tests and rollbacks."""
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    """The schema's Alembic revision (``None`` before the first migration)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
