"""The gateway's durable outbox: every reading is kept on disk from the moment it is accepted until the cloud
acknowledges it.

One SQLite file, ``<state>/outbox.db`` (WAL journal, ``synchronous=FULL``: a committed transaction survives a
crash or a power cut). Life of a reading::

    enqueue()        one transaction allocates the next sequence numbers AND stores the readings (unsigned);
                     the counter never goes back, so a number is never reused, whatever the process dies of
    set_signatures() the enclave's signatures are stored, with the fingerprint of the key that made them (still
                     before any upload); an entry signed by a key that is no longer the gateway's is signed again
                     (:meth:`Outbox.signed_by_other_key`) before it is uploaded
    acknowledge()    the cloud said "stored" or "duplicate": the entry is deleted
    dead_letter()    the cloud refused the reading for good (e.g. ``BAD_SIGNATURE``): the entry moves, with the
                     cloud's code, to the dead-letter table and is not sent again

Because the reading's fields (gateway, seq, timestamp, payload) are fixed at enqueue time, re-signing an entry
after a crash, or uploading it twice, gives the cloud the same reading, which its idempotent ingest stores once.

Schema 2 added the signing key's fingerprint (``key_sha256``, SHA-256 of the SPKI DER) to ``pending`` and
``dead_letters``. A schema-1 file is migrated in place when it is opened (one transaction, idempotent); its signed
entries have no recorded key (``NULL``) and are signed again before their upload.

``enqueue`` can also record how far an input file was consumed (:meth:`Outbox.input_offset`), in the same
transaction, so that ``gateway run --input FILE`` resumes exactly after the last reading it stored.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from sgx_iot.errors import FormatError, UsageError
from sgx_iot.verify.readings import MAX_SEQ, Reading, SignedReading

OUTBOX_FILE = "outbox.db"
SCHEMA_VERSION = 2
_MIGRATABLE = {"1"}
_BUSY_TIMEOUT_MS = 30_000
_MESSAGE_LIMIT = 1000
_PROVISIONAL = "provisional"  # meta "numbering" of a new outbox until continue_from

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pending (
    seq          INTEGER PRIMARY KEY,
    gateway      TEXT    NOT NULL,
    timestamp    INTEGER NOT NULL,
    payload      BLOB    NOT NULL,
    signature    BLOB,
    key_sha256   TEXT,
    created_at   REAL    NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT
);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq        INTEGER PRIMARY KEY,
    gateway    TEXT    NOT NULL,
    timestamp  INTEGER NOT NULL,
    payload    BLOB    NOT NULL,
    signature  BLOB,
    key_sha256 TEXT,
    code       TEXT    NOT NULL,
    message    TEXT    NOT NULL,
    failed_at  REAL    NOT NULL
);
CREATE TABLE IF NOT EXISTS inputs (
    source    TEXT PRIMARY KEY,
    consumed  INTEGER NOT NULL
);
"""
#: Columns added after schema 1: (table, column, declaration).
_ADDED_COLUMNS = (("pending", "key_sha256", "TEXT"), ("dead_letters", "key_sha256", "TEXT"))


@dataclass(frozen=True)
class DeadLetter:
    """A reading the cloud refused for good, with the cloud's code and sentence, and the fingerprint of the key
    that signed what was sent (``None``: unsigned, or signed before the outbox recorded keys)."""

    reading: Reading
    signature: bytes | None
    code: str
    message: str
    failed_at: float
    key_sha256: str | None = None


@dataclass(frozen=True)
class OutboxStats:
    """What ``gateway status`` shows about the outbox (times are Unix seconds, ``None`` when never)."""

    pending: int
    unsigned: int
    dead_letters: int
    next_seq: int
    oldest_pending_at: float | None
    last_upload_at: float | None
    last_error: str | None
    last_error_at: float | None
    delivered_total: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "pending": self.pending, "unsigned": self.unsigned, "dead_letters": self.dead_letters,
            "next_seq": self.next_seq, "oldest_pending_at": self.oldest_pending_at,
            "last_upload_at": self.last_upload_at, "last_error": self.last_error,
            "last_error_at": self.last_error_at, "delivered_total": self.delivered_total,
        }  # fmt: skip


class Outbox:
    """An open outbox file. Use as a context manager, or call :meth:`close`.

    Safe to use from several processes at once (writes take SQLite's write lock with ``BEGIN IMMEDIATE``); one
    ``Outbox`` object belongs to one thread.
    """

    def __init__(self, path: str | Path, *, clock: Any = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self._db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            self._db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            with self._write():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                version = self._meta("schema_version")
                if version is None:
                    self._set_meta("schema_version", str(SCHEMA_VERSION))
                    self._set_meta("next_seq", "0")
                    # A new outbox numbers its readings provisionally: if the gateway had an outbox before (it was
                    # lost), the cloud holds numbers that must not be used again (continue_from).
                    self._set_meta("numbering", _PROVISIONAL)
                elif version in _MIGRATABLE:
                    self._migrate()
                elif version != str(SCHEMA_VERSION):
                    raise FormatError(str(self.path), "schema_version", None,
                                      f"outbox schema {version} is not supported (expected {SCHEMA_VERSION})")
        except sqlite3.DatabaseError as exc:
            raise FormatError(str(self.path), "(file)", None, f"not a usable outbox database: {exc}") from None
        try:
            self.path.chmod(0o600)
        except OSError:
            pass

    @classmethod
    def in_folder(cls, folder: str | Path, **kwargs: Any) -> Outbox:
        """The outbox of the gateway state folder ``folder``."""
        return cls(Path(folder) / OUTBOX_FILE, **kwargs)

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    # --- transactions --------------------------------------------------------------------------------------

    def _write(self) -> _Transaction:
        return _Transaction(self._db)

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = "
                         "excluded.value", (key, value))  # fmt: skip

    def _migrate(self) -> None:
        """Bring an older schema to the current one, inside the opening transaction (a crash leaves it as it was;
        running it again after a partial manual change adds only what is missing)."""
        for table, column, declaration in _ADDED_COLUMNS:
            present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        self._set_meta("schema_version", str(SCHEMA_VERSION))

    # --- writing -------------------------------------------------------------------------------------------

    def enqueue(self, gateway: str, payloads: Sequence[bytes], *, timestamp: int | None = None,
                source: str | None = None, offset: int | None = None) -> list[Reading]:
        """Store ``payloads`` as new readings of ``gateway``; return them with their sequence numbers.

        The sequence numbers are allocated in the same transaction that stores the readings (and, when
        ``source`` is given, records ``offset`` as how far that input was consumed): after a crash either all of
        it happened or none. ``timestamp`` defaults to the current time (Unix seconds).
        """
        now = self._clock()
        ts = int(now) if timestamp is None else timestamp
        with self._write():
            first = int(self._meta("next_seq") or "0")
            if first + len(payloads) - 1 > MAX_SEQ:
                raise UsageError("the gateway has used every sequence number")
            readings = [Reading(gateway, first + i, ts, bytes(p)) for i, p in enumerate(payloads)]
            self._db.executemany(
                "INSERT INTO pending(seq, gateway, timestamp, payload, created_at) VALUES (?, ?, ?, ?, ?)",
                [(r.seq, r.gateway, r.timestamp, r.payload, now) for r in readings],
            )
            self._set_meta("next_seq", str(first + len(payloads)))
            if source is not None and offset is not None:
                self._db.execute("INSERT INTO inputs(source, consumed) VALUES (?, ?) ON CONFLICT(source) DO "
                                 "UPDATE SET consumed = excluded.consumed", (source, offset))  # fmt: skip
        return readings

    def set_signatures(self, signed: Iterable[tuple[int, bytes]], key_sha256: str | None = None) -> None:
        """Store the enclave's DER signature of each ``(seq, signature)``, made by the key whose fingerprint is
        ``key_sha256`` (``None``: unknown, the entry will be signed again before its upload). Entries already gone
        are ignored; an existing signature is replaced."""
        with self._write():
            self._db.executemany("UPDATE pending SET signature = ?, key_sha256 = ? WHERE seq = ?",
                                 [(s, key_sha256, q) for q, s in signed])  # fmt: skip

    def acknowledge(self, seqs: Iterable[int]) -> int:
        """Delete the entries the cloud acknowledged; return how many were still there."""
        seqs = list(seqs)
        if not seqs:
            return 0
        with self._write():
            deleted = 0
            for chunk in _chunks(seqs, 500):
                marks = ",".join("?" * len(chunk))
                deleted += self._db.execute(f"DELETE FROM pending WHERE seq IN ({marks})", chunk).rowcount
            total = int(self._meta("delivered_total") or "0") + deleted
            self._set_meta("delivered_total", str(total))
            self._set_meta("last_upload_at", repr(self._clock()))
        return deleted

    def dead_letter(self, refusals: Iterable[tuple[int, str, str]]) -> int:
        """Move each ``(seq, code, message)`` entry to the dead-letter table; return how many moved."""
        now = self._clock()
        moved = 0
        with self._write():
            for seq, code, message in refusals:
                cursor = self._db.execute(
                    "INSERT OR REPLACE INTO dead_letters(seq, gateway, timestamp, payload, signature, key_sha256, "
                    "code, message, failed_at) SELECT seq, gateway, timestamp, payload, signature, key_sha256, ?, ?, "
                    "? FROM pending WHERE seq = ?",
                    (code[:64], message[:_MESSAGE_LIMIT], now, seq),
                )  # fmt: skip
                if cursor.rowcount:
                    self._db.execute("DELETE FROM pending WHERE seq = ?", (seq,))
                    moved += 1
        return moved

    def record_attempt(self, seqs: Iterable[int], error: str | None) -> None:
        """Count one delivery attempt of ``seqs``; ``error`` (a sentence) becomes the outbox's last error."""
        seqs = list(seqs)
        with self._write():
            for chunk in _chunks(seqs, 500):
                marks = ",".join("?" * len(chunk))
                self._db.execute(f"UPDATE pending SET attempts = attempts + 1, last_error = ? WHERE seq IN ({marks})",
                                 [error, *chunk])  # fmt: skip
            if error is not None:
                self._set_meta("last_error", error[:_MESSAGE_LIMIT])
                self._set_meta("last_error_at", repr(self._clock()))

    def record_error(self, error: str) -> None:
        """Remember ``error`` as the last error (shown by ``gateway status``)."""
        self.record_attempt([], error)

    def clear_error(self) -> None:
        """Forget the last error (after a delivery round that reached the cloud without failing)."""
        with self._write():
            self._db.execute("DELETE FROM meta WHERE key IN ('last_error', 'last_error_at')")

    # --- reading -------------------------------------------------------------------------------------------

    def unsigned(self, limit: int, *, after: int = -1) -> list[Reading]:
        """Up to ``limit`` entries not signed yet, with a sequence number above ``after``, oldest first."""
        rows = self._db.execute("SELECT gateway, seq, timestamp, payload FROM pending WHERE signature IS NULL "
                                "AND seq > ? ORDER BY seq LIMIT ?", (after, limit)).fetchall()  # fmt: skip
        return [Reading(g, s, t, bytes(p)) for g, s, t, p in rows]

    def ready(self, limit: int, *, after: int = -1, key_sha256: str | None = None) -> list[SignedReading]:
        """Up to ``limit`` signed entries waiting for an acknowledgement, with a sequence number above ``after``,
        oldest first; only those signed by the key ``key_sha256`` when it is given."""
        if key_sha256 is None:
            rows = self._db.execute("SELECT gateway, seq, timestamp, payload, signature FROM pending WHERE signature "
                                    "IS NOT NULL AND seq > ? ORDER BY seq LIMIT ?", (after, limit)).fetchall()
        else:
            rows = self._db.execute("SELECT gateway, seq, timestamp, payload, signature FROM pending WHERE signature "
                                    "IS NOT NULL AND key_sha256 = ? AND seq > ? ORDER BY seq LIMIT ?",
                                    (key_sha256, after, limit)).fetchall()  # fmt: skip
        return [SignedReading(Reading(g, s, t, bytes(p)), bytes(sig)) for g, s, t, p, sig in rows]

    def signed_by_other_key(self, key_sha256: str, limit: int) -> list[Reading]:
        """Up to ``limit`` signed entries whose signature was not made by the key ``key_sha256`` (another key, or
        one not recorded), oldest first: they must be signed again before the cloud can verify them."""
        rows = self._db.execute("SELECT gateway, seq, timestamp, payload FROM pending WHERE signature IS NOT NULL AND "
                                "(key_sha256 IS NULL OR key_sha256 != ?) ORDER BY seq LIMIT ?",
                                (key_sha256, limit)).fetchall()  # fmt: skip
        return [Reading(g, s, t, bytes(p)) for g, s, t, p in rows]

    def count_signed_by_other_key(self, key_sha256: str) -> int:
        """How many signed entries :meth:`signed_by_other_key` would give (for ``gateway status``)."""
        return int(self._db.execute("SELECT COUNT(*) FROM pending WHERE signature IS NOT NULL AND (key_sha256 IS NULL "
                                    "OR key_sha256 != ?)", (key_sha256,)).fetchone()[0])  # fmt: skip

    def depth(self) -> int:
        """How many readings wait for an acknowledgement (signed or not)."""
        return int(self._db.execute("SELECT COUNT(*) FROM pending").fetchone()[0])

    def numbering_confirmed(self) -> bool:
        """False while the sequence numbers of a new outbox are provisional (:meth:`continue_from` not called
        yet): its readings must not be signed, since signing fixes their numbers."""
        return self._meta("numbering") != _PROVISIONAL

    def continue_from(self, seq: int) -> int:
        """Number new readings from ``seq`` (one more than the highest number the cloud holds for the gateway) on,
        unless the outbox is already past it, and confirm the numbering; return the next number.

        Readings stored while the numbering was provisional and numbered below ``seq`` are numbered again, in
        order, from ``seq`` on (none of them is signed yet). Readings keep their numbers once confirmed."""
        if not 0 <= seq <= MAX_SEQ + 1:
            raise UsageError(f"{seq} is not a sequence number")
        with self._write():
            current = int(self._meta("next_seq") or "0")
            if self._meta("numbering") == _PROVISIONAL:
                low = self._db.execute("SELECT MIN(seq) FROM pending").fetchone()[0]
                if low is not None and low < seq:
                    shift = seq - low
                    if current + shift - 1 > MAX_SEQ:
                        raise UsageError("the gateway has used every sequence number")
                    # Two steps, so that no intermediate number collides with another entry's.
                    self._db.execute("UPDATE pending SET seq = -1 - seq")
                    self._db.execute("UPDATE pending SET seq = -1 - seq + ?", (shift,))
                    current += shift
                self._set_meta("numbering", "confirmed")
            if seq > current:
                current = seq
            self._set_meta("next_seq", str(current))
            return current

    def next_seq(self) -> int:
        """The sequence number the next reading will get."""
        return int(self._meta("next_seq") or "0")

    def input_offset(self, source: str) -> int | None:
        """How far input ``source`` was consumed (bytes), as last recorded by :meth:`enqueue`."""
        row = self._db.execute("SELECT consumed FROM inputs WHERE source = ?", (source,)).fetchone()
        return None if row is None else int(row[0])

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The most recent dead letters, newest first."""
        rows = self._db.execute("SELECT gateway, seq, timestamp, payload, signature, code, message, failed_at, "
                                "key_sha256 FROM dead_letters ORDER BY failed_at DESC, seq DESC LIMIT ?",
                                (limit,)).fetchall()  # fmt: skip
        return [DeadLetter(Reading(g, s, t, bytes(p)), None if sig is None else bytes(sig), code, msg, at, key)
                for g, s, t, p, sig, code, msg, at, key in rows]  # fmt: skip

    def stats(self) -> OutboxStats:
        """Counts and the last upload/error (for ``gateway status``)."""
        pending, unsigned, oldest = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(signature IS NULL), 0), MIN(created_at) FROM pending").fetchone()
        dead = self._db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]

        def number(key: str) -> float | None:
            value = self._meta(key)
            return None if value is None else float(value)

        return OutboxStats(
            pending=int(pending), unsigned=int(unsigned), dead_letters=int(dead), next_seq=self.next_seq(),
            oldest_pending_at=oldest, last_upload_at=number("last_upload_at"), last_error=self._meta("last_error"),
            last_error_at=number("last_error_at"), delivered_total=int(self._meta("delivered_total") or "0"),
        )  # fmt: skip


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error): the write lock is taken before any read."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")


def _chunks(items: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
