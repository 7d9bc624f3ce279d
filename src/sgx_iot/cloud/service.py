"""The relying party's logic, free of any web framework: challenges, registration by attestation, revocation,
ingest of signed readings, queries. :mod:`sgx_iot.cloud.api` exposes it over HTTP; tests may call it directly.

Rules it enforces:

* a nonce is single-use and expires ``policy.nonce_lifetime`` seconds after it was issued; it is consumed, in the
  same transaction that registers the key, only by a successful registration;
* a gateway's key is set or changed only by a successful appraisal (:func:`sgx_iot.verify.appraise.appraise`),
  and only from the platform (PPID) that first registered the name (GATEWAY_NAME_TAKEN otherwise); a refused
  registration stores nothing but one audit-log row; a revoked gateway stays revoked;
* a reading is accepted only if its signature verifies under the gateway's *current* attested key; the same
  reading (gateway, seq, timestamp, payload) sent again is acknowledged as a duplicate and not stored twice; a
  different reading with a used sequence number is refused (``REPLAYED_READING``).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from sgx_iot.errors import FormatError, SgxIotError, VerificationError
from sgx_iot.verify.appraise import AppraisalResult, appraise, load_p256_public_key
from sgx_iot.verify.collateral import CollateralSource
from sgx_iot.verify.ear import DEFAULT_LIFETIME, DEFAULT_VERIFIER_ID, issue_ear
from sgx_iot.verify.evidence import Evidence
from sgx_iot.verify.policy import Policy
from sgx_iot.verify.readings import GATEWAY_NAME_RE, SignedReading, check_gateway_name, verify_reading

from sgx_iot.cloud.models import AttestationRow, AuditRow, ChallengeRow, GatewayRow, ReadingRow

_GATEWAY_TABLE = GatewayRow.__table__
_READINGS = ReadingRow.__table__
_AUDIT = AuditRow.__table__
_GATEWAYS = select(_GATEWAY_TABLE.c.id, _GATEWAY_TABLE.c.name, _GATEWAY_TABLE.c.revoked_at,
                   _GATEWAY_TABLE.c.public_key_pem, _GATEWAY_TABLE.c.key_sha256).where(
    _GATEWAY_TABLE.c.name.in_(bindparam("names", expanding=True)))
_EXISTING = select(_READINGS.c.seq, _READINGS.c.timestamp, _READINGS.c.payload).where(
    _READINGS.c.gateway_id == bindparam("gid"), _READINGS.c.seq.in_(bindparam("seqs", expanding=True)))

NONCE_BYTES = 32
MAX_READINGS_PAGE = 1000
_MESSAGE_LIMIT = 1000


# ECDSA verification in cryptography (OpenSSL) releases the GIL: a large batch is verified on two threads, and
# (ingest_async) off the event loop, which meanwhile parses and stores other batches. On a multi-core machine
# this nearly doubles the verifications per second of one service worker.
_VERIFY_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sgx-iot-verify")
_PARALLEL_FROM = 16  # below this many signatures, splitting them over two threads costs more than it saves
# The storing transaction of ingest_async runs on its own thread: the event loop is not blocked while SQLite
# commits (fsync) and can parse and answer other requests meanwhile. One thread: writes serialize in the
# database anyway, and a second writer would only wait on SQLite's lock.
_STORE_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sgx-iot-store")


def _verify_some(checks: Sequence[tuple[int, SignedReading, ec.EllipticCurvePublicKey]]
                 ) -> list[VerificationError | None]:
    out: list[VerificationError | None] = []
    for _, sr, key in checks:
        try:
            verify_reading(sr.reading, sr.signature, key)
        except VerificationError as exc:
            out.append(exc)
        else:
            out.append(None)
    return out


def _verify_all(checks: Sequence[tuple[int, SignedReading, ec.EllipticCurvePublicKey]]
                ) -> list[VerificationError | None]:
    """The verification failure (or None) of each ``(index, signed reading, key)``, in order."""
    if len(checks) < _PARALLEL_FROM:
        return _verify_some(checks)
    half = len(checks) // 2
    other = _VERIFY_POOL.submit(_verify_some, checks[half:])
    first = _verify_some(checks[:half])
    return first + other.result()


_HIGHEST_SEQ = (select(func.max(ReadingRow.seq)).where(ReadingRow.gateway_id == GatewayRow.id)
                .correlate(GatewayRow).scalar_subquery())
"""The highest sequence number stored for the gateway of the row selected with it: one lookup in the unique
(gateway, seq) index per gateway (a GROUP BY over several gateways would read every entry of theirs)."""


def next_seq(session: Session, gateway_id: int) -> int:
    """:attr:`GatewayInfo.next_seq` of one gateway."""
    return _after(session.execute(select(func.max(ReadingRow.seq)).where(ReadingRow.gateway_id == gateway_id))
                  .scalar())


def _after(highest: int | None) -> int:
    return 0 if highest is None else highest + 1


class NotFoundError(SgxIotError):
    """Something named does not exist (``code`` says what)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class Challenge:
    """A nonce handed to a gateway, to be bound into its next quote."""

    nonce: bytes
    created_at: int
    expires_at: int


@dataclass(frozen=True)
class GatewayInfo:
    """A registered gateway as the registry knows it."""

    name: str
    status: str  # "active" | "revoked"
    public_key_pem: str
    key_sha256: str
    platform: str
    enclave: dict[str, Any]
    tcb_status: str
    advisory_ids: list[str]
    policy_id: str
    created_at: int
    updated_at: int
    revoked_at: int | None
    revoked_reason: str | None
    platform_id: str | None = None
    next_seq: int = 0
    """One more than the highest sequence number stored for the gateway (0 before its first reading): where a
    gateway that lost its outbox must continue numbering (a used number is refused as REPLAYED_READING)."""

    @classmethod
    def from_row(cls, row: GatewayRow, next_seq: int = 0) -> GatewayInfo:
        """From its database row, and its next sequence number (:func:`next_seq`)."""
        return cls(
            name=row.name, status="revoked" if row.revoked_at is not None else "active",
            public_key_pem=row.public_key_pem, key_sha256=row.key_sha256, platform=row.platform,
            enclave={"mrenclave": row.mrenclave, "mrsigner": row.mrsigner, "isv_prod_id": row.isv_prod_id,
                     "isv_svn": row.isv_svn},
            tcb_status=row.tcb_status, advisory_ids=json.loads(row.advisory_ids), policy_id=row.policy_id,
            created_at=row.created_at, updated_at=row.updated_at, revoked_at=row.revoked_at,
            revoked_reason=row.revoked_reason, platform_id=row.platform_id, next_seq=next_seq,
        )


@dataclass(frozen=True)
class Registration:
    """A successful registration: the gateway, the EAR token, the appraisal, and whether the key changed."""

    gateway: GatewayInfo
    ear: str
    appraisal: AppraisalResult
    created: bool
    key_changed: bool


@dataclass(frozen=True)
class Verdict:
    """What happened to one reading of a batch: ``stored``, ``duplicate`` (already stored) or ``refused``."""

    index: int
    gateway: str
    seq: int
    status: str
    code: str | None
    message: str

    @property
    def acknowledged(self) -> bool:
        """True when the cloud holds this reading (now or from before): the gateway may drop it from its outbox."""
        return self.status in ("stored", "duplicate")


@dataclass(frozen=True)
class StoredReading:
    """An accepted reading, with what is needed to verify it again."""

    gateway: str
    seq: int
    timestamp: int
    payload: bytes
    signature: bytes
    key_sha256: str
    received_at: int
    cursor: str = ""  # position just after this reading in list_readings' order (``after=``)


def parse_cursor(cursor: str) -> tuple[int, int]:
    """The ``(timestamp, row id)`` of a :attr:`StoredReading.cursor`; ``FormatError`` if it is not one."""
    ts, sep, row_id = cursor.partition(":")
    try:
        position = (int(ts), int(row_id))
    except ValueError:
        position = None
    if not sep or position is None or not -(2**63) <= position[0] < 2**63 or not 0 <= position[1] < 2**63:
        raise FormatError("readings", "after", None, "is not a cursor returned as 'next' by GET /v1/readings")
    return position


@dataclass(frozen=True)
class AuditEvent:
    """One audit-log entry."""

    at: int
    action: str
    gateway: str | None
    code: str
    message: str
    remote: str | None
    detail: dict[str, Any] | None


def _text(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters, NUL replaced (PostgreSQL text cannot hold it; SQLite can)."""
    return value[:limit].replace("\x00", "\ufffd")


def _not_found(name: str) -> NotFoundError:
    shown = name if GATEWAY_NAME_RE.fullmatch(name) else _text(name, 64).encode("unicode_escape").decode("ascii")
    return NotFoundError("GATEWAY_NOT_FOUND", f"no gateway called {shown!r} is registered")


def key_fingerprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """SHA-256 (hex) of the key's SubjectPublicKeyInfo DER."""
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


class CloudService:
    """The registry of attested gateways and the store of verified readings."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        policy: Policy,
        verifier_key: ec.EllipticCurvePrivateKey,
        *,
        collateral: CollateralSource | None = None,
        clock: Callable[[], float] = time.time,
        ear_lifetime: int = DEFAULT_LIFETIME,
        verifier_id: dict[str, str] | None = None,
    ) -> None:
        self.sessions = sessions
        self.engine: Engine = sessions.kw["bind"]
        self.policy = policy
        self.verifier_key = verifier_key
        self.collateral = collateral
        self.clock = clock
        self.ear_lifetime = ear_lifetime
        self.verifier_id = verifier_id or dict(DEFAULT_VERIFIER_ID)
        self._keys: dict[str, ec.EllipticCurvePublicKey] = {}
        self._keys_lock = threading.Lock()
        # gateway name -> (key fingerprint, key) as the last ingest transaction saw it (see ingest_async)
        self._key_hints: dict[str, tuple[str, ec.EllipticCurvePublicKey]] = {}

    def now(self) -> int:
        """The service's current time (Unix seconds)."""
        return int(self.clock())

    # --- challenges -----------------------------------------------------------------------------------------

    def issue_challenge(self) -> Challenge:
        """A fresh random nonce, valid for the policy's nonce lifetime, single-use."""
        now = self.now()
        nonce = secrets.token_bytes(NONCE_BYTES)
        challenge = Challenge(nonce, now, now + self.policy.nonce_lifetime)
        with self.sessions.begin() as s:
            s.add(ChallengeRow(nonce=nonce.hex(), created_at=now, expires_at=challenge.expires_at))
            # Forget challenges expired for a day (used ones included): the table stays small.
            s.execute(delete(ChallengeRow).where(ChallengeRow.expires_at < now - 86_400))
        return challenge

    def _nonce_check(self, now: int) -> Callable[[bytes], None]:
        def check(nonce: bytes) -> None:
            with self.sessions() as s:
                row = s.get(ChallengeRow, nonce.hex())
            if row is None:
                raise VerificationError("NONCE_UNKNOWN", "this nonce was not issued by this service "
                                                         "(ask POST /v1/challenges for one)")
            if row.used_at is not None:
                raise VerificationError("NONCE_UNKNOWN", "this nonce was already used: nonces are single-use, "
                                                         "ask for a new challenge")
            if now > row.expires_at:
                raise VerificationError("NONCE_EXPIRED", f"this nonce expired {now - row.expires_at} s ago; ask for "
                                                         "a new challenge and attest again")

        return check

    # --- registration ---------------------------------------------------------------------------------------

    def register(self, name: str, evidence: Evidence, *, remote: str | None = None) -> Registration:
        """Appraise ``evidence``; on success register or re-key gateway ``name`` and return its EAR.

        Raises ``VerificationError`` (the appraisal's first failure code, or GATEWAY_REVOKED, NONCE_UNKNOWN on a
        lost race) after writing one audit-log row; nothing else is stored then.
        """
        check_gateway_name(name, "registration")
        now = self.now()
        with self.sessions() as s:
            existing = s.scalars(select(GatewayRow).where(GatewayRow.name == name)).first()
        if existing is not None and existing.revoked_at is not None:
            self._refuse("register", name, "GATEWAY_REVOKED",
                         f"gateway {name!r} was revoked and cannot register again", remote)
        result = appraise(evidence, self.policy, now=now, nonce_check=self._nonce_check(now),
                          collateral=self.collateral)
        if not result.affirming:
            code = result.code or "APPRAISAL_FAILED"
            self._refuse("register", name, code, result.sentence, remote,
                         {"policy_id": result.policy_id, "enclave": result.enclave.to_dict() if result.enclave else None,
                          "failed_checks": [c.name for c in result.failures]})
        key = result.public_key()
        fingerprint = key_fingerprint(key)
        token = issue_ear(result, self.verifier_key, iat=now, lifetime=self.ear_lifetime,
                          verifier_id=self.verifier_id, subject=name)
        try:
            try:
                return self._store_registration(name, result, fingerprint, token, now)
            except IntegrityError:
                # Another request registered the same new name at the same moment: retry once as an update.
                return self._store_registration(name, result, fingerprint, token, now)
        except VerificationError as exc:
            self._refuse("register", name, exc.code, exc.message, remote)
            raise  # pragma: no cover - _refuse raises

    def _store_registration(self, name: str, result: AppraisalResult, fingerprint: str, token: str,
                            now: int) -> Registration:
        enclave = result.enclave
        assert enclave is not None
        with self.sessions.begin() as s:
            consumed = s.execute(
                update(ChallengeRow)
                .where(ChallengeRow.nonce == result.nonce.hex(), ChallengeRow.used_at.is_(None),
                       ChallengeRow.expires_at >= now)
                .values(used_at=now)
            ).rowcount
            if consumed != 1:
                raise VerificationError("NONCE_UNKNOWN", "this nonce was already used by a concurrent registration")
            row = s.scalars(select(GatewayRow).where(GatewayRow.name == name).with_for_update()).first()
            if row is not None and row.revoked_at is not None:
                raise VerificationError("GATEWAY_REVOKED", f"gateway {name!r} was revoked and cannot register again")
            # A name stays with the platform that registered it; only the same key may be re-attested when either
            # side has no platform id (a row from before platform ids were recorded).
            same_platform = row is not None and row.platform_id is not None and row.platform_id == result.platform_id
            if row is not None and not same_platform and row.key_sha256 != fingerprint:
                raise VerificationError(
                    "GATEWAY_NAME_TAKEN",
                    f"gateway {name!r} is registered to another platform; a name can only be re-attested from the "
                    "platform that registered it (use another name for another machine)")
            created = row is None
            key_changed = created or row.key_sha256 != fingerprint  # type: ignore[union-attr]
            fields = dict(
                updated_at=now, public_key_pem=result.public_key_pem, key_sha256=fingerprint,
                platform=result.platform, mrenclave=enclave.mrenclave.hex(), mrsigner=enclave.mrsigner.hex(),
                isv_prod_id=enclave.isv_prod_id, isv_svn=enclave.isv_svn, tcb_status=result.tcb_status or "",
                advisory_ids=json.dumps(list(result.advisory_ids)), policy_id=result.policy_id,
                platform_id=result.platform_id,
            )
            if row is None:
                row = GatewayRow(name=name, created_at=now, **fields)
                s.add(row)
            else:
                for k, v in fields.items():
                    setattr(row, k, v)
            s.flush()
            s.add(AttestationRow(
                gateway_id=row.id, created_at=now, public_key_pem=result.public_key_pem, key_sha256=fingerprint,
                mrenclave=fields["mrenclave"], mrsigner=fields["mrsigner"], isv_prod_id=enclave.isv_prod_id,
                isv_svn=enclave.isv_svn, tcb_status=fields["tcb_status"], advisory_ids=fields["advisory_ids"],
                policy_id=result.policy_id, nonce=result.nonce.hex(), ear=token, platform_id=result.platform_id,
            ))
            info = GatewayInfo.from_row(row, next_seq(s, row.id))
        return Registration(info, token, result, created, key_changed)

    # --- registry -------------------------------------------------------------------------------------------

    def list_gateways(self) -> list[GatewayInfo]:
        """Every registered gateway, by name."""
        with self.sessions() as s:
            rows = s.execute(select(GatewayRow, _HIGHEST_SEQ).order_by(GatewayRow.name))
            return [GatewayInfo.from_row(row, _after(highest)) for row, highest in rows]

    def get_gateway(self, name: str) -> GatewayInfo:
        """The gateway called ``name`` (``NotFoundError`` GATEWAY_NOT_FOUND otherwise)."""
        if not GATEWAY_NAME_RE.fullmatch(name):  # can never be registered; not even sent to the database
            raise _not_found(name)
        with self.sessions() as s:
            row = s.scalars(select(GatewayRow).where(GatewayRow.name == name)).first()
            if row is None:
                raise _not_found(name)
            return GatewayInfo.from_row(row, next_seq(s, row.id))

    def revoke(self, name: str, reason: str = "", *, remote: str | None = None) -> GatewayInfo:
        """Revoke gateway ``name``: its readings are refused from now on and it cannot register again."""
        if not GATEWAY_NAME_RE.fullmatch(name):
            raise _not_found(name)
        now = self.now()
        with self.sessions.begin() as s:
            row = s.scalars(select(GatewayRow).where(GatewayRow.name == name).with_for_update()).first()
            if row is None:
                raise _not_found(name)
            if row.revoked_at is None:
                row.revoked_at = now
                row.revoked_reason = _text(reason, 500) or None
                s.add(AuditRow(at=now, action="revoke", gateway=name, code="GATEWAY_REVOKED",
                               message=_text(reason or "revoked by an administrator", _MESSAGE_LIMIT),
                               remote=remote))
            return GatewayInfo.from_row(row, next_seq(s, row.id))

    # --- readings -------------------------------------------------------------------------------------------

    def _public_key(self, key_sha256: str, pem: str) -> ec.EllipticCurvePublicKey:
        key = self._keys.get(key_sha256)
        if key is None:
            key = load_p256_public_key(pem)
            with self._keys_lock:
                if len(self._keys) > 10_000:
                    self._keys.clear()
                self._keys[key_sha256] = key
        return key

    def _hint(self, name: str, key_sha256: str, pem: str) -> None:
        hint = self._key_hints.get(name)
        if hint is None or hint[0] != key_sha256:
            key = self._public_key(key_sha256, pem)
            with self._keys_lock:
                if len(self._key_hints) > 10_000:
                    self._key_hints.clear()
                self._key_hints[name] = (key_sha256, key)

    def ingest(self, batch: Sequence[SignedReading], *, remote: str | None = None,
               verified: dict[int, tuple[str, VerificationError | None]] | None = None) -> list[Verdict]:
        """Verify and store a batch of signed readings; one verdict per reading, in order.

        ``verified`` (from :meth:`ingest_async`) maps batch indexes to ``(key_sha256, failure or None)`` of a
        verification already done; it is used only if that key is still the gateway's key when storing.
        """
        try:
            return self._ingest(batch, remote, verified or {})
        except IntegrityError:
            # A concurrent batch stored some of the same (gateway, seq): redo; they are now seen as stored.
            return self._ingest(batch, remote, verified or {})

    async def ingest_async(self, batch: Sequence[SignedReading], *, remote: str | None = None) -> list[Verdict]:
        """:meth:`ingest` for the event loop: the signatures of a large batch are verified on worker threads, and
        the storing transaction runs on the store thread, so the loop stays free to parse and answer other
        requests meanwhile."""
        loop = asyncio.get_running_loop()
        if len(batch) < _PARALLEL_FROM:
            return await loop.run_in_executor(_STORE_POOL, functools.partial(self.ingest, batch, remote=remote))
        # Which key to verify with: the gateway's key as the last ingest saw it (a hint: the storing transaction
        # checks it is still the current key and verifies again otherwise), else as the database has it now.
        hints = self._key_hints
        names = {sr.reading.gateway for sr in batch}
        if not names <= hints.keys():
            with self.engine.connect() as conn:
                for row in conn.execute(_GATEWAYS, {"names": sorted(names)}):
                    if row.revoked_at is None:
                        self._hint(row.name, row.key_sha256, row.public_key_pem)
        checks = []
        fingerprints: dict[int, str] = {}
        for i, sr in enumerate(batch):
            hint = hints.get(sr.reading.gateway)
            if hint is not None:
                checks.append((i, sr, hint[1]))
                fingerprints[i] = hint[0]
        half = len(checks) // 2
        parts = await asyncio.gather(*(loop.run_in_executor(_VERIFY_POOL, _verify_some, part)
                                       for part in (checks[:half], checks[half:]) if part))
        failures = [f for part in parts for f in part]
        verified = {i: (fingerprints[i], failure) for (i, _, _), failure in zip(checks, failures)}
        return await loop.run_in_executor(_STORE_POOL, functools.partial(self.ingest, batch, remote=remote,
                                                                         verified=verified))

    def _ingest(self, batch: Sequence[SignedReading], remote: str | None,
                verified: dict[int, tuple[str, VerificationError | None]]) -> list[Verdict]:
        # Core statements on a plain connection: this is the hot path (ORM overhead would rival the
        # signature verifications it wraps).
        now = self.now()
        verdicts: list[Verdict | None] = [None] * len(batch)
        refused: list[dict[str, Any]] = []

        def refuse(i: int, code: str, message: str) -> None:
            r = batch[i].reading
            verdicts[i] = Verdict(i, r.gateway, r.seq, "refused", code, message)
            refused.append(dict(at=now, action="reading", gateway=r.gateway, code=code,
                                message=message[:_MESSAGE_LIMIT], remote=remote, detail=json.dumps({"seq": r.seq})))

        with self.engine.begin() as conn:
            names = sorted({sr.reading.gateway for sr in batch})
            gateways = {row.name: row for row in conn.execute(_GATEWAYS, {"names": names})}
            candidates: dict[int, list[int]] = {}  # gateway id -> batch indexes whose signature verified
            checks: list[tuple[int, SignedReading, ec.EllipticCurvePublicKey]] = []
            outcomes: list[tuple[int, VerificationError | None]] = []
            for row in gateways.values():
                if row.revoked_at is None:
                    self._hint(row.name, row.key_sha256, row.public_key_pem)
                else:
                    self._key_hints.pop(row.name, None)
            for i, sr in enumerate(batch):
                r = sr.reading
                gw = gateways.get(r.gateway)
                if gw is None:
                    refuse(i, "UNKNOWN_GATEWAY", f"no gateway called {r.gateway!r} is registered; register it "
                                                 "by attestation first")
                elif gw.revoked_at is not None:
                    refuse(i, "GATEWAY_REVOKED", f"gateway {r.gateway!r} was revoked; its readings are refused")
                else:
                    done = verified.get(i)
                    if done is not None and done[0] == gw.key_sha256:
                        outcomes.append((i, done[1]))
                    else:
                        checks.append((i, sr, self._public_key(gw.key_sha256, gw.public_key_pem)))
            outcomes += zip((c[0] for c in checks), _verify_all(checks))
            outcomes.sort(key=lambda o: o[0])
            for i, failure in outcomes:
                if failure is not None:
                    refuse(i, failure.code, failure.message)
                else:
                    candidates.setdefault(gateways[batch[i].reading.gateway].id, []).append(i)
            new_rows: list[dict[str, Any]] = []
            for gid, indexes in candidates.items():
                seqs = sorted({batch[i].reading.seq for i in indexes})
                existing: dict[int, tuple[int, bytes]] = {}
                for chunk in range(0, len(seqs), 500):
                    for seq, ts, payload in conn.execute(_EXISTING, {"gid": gid, "seqs": seqs[chunk:chunk + 500]}):
                        existing[seq] = (ts, bytes(payload))
                key_sha256 = gateways[batch[indexes[0]].reading.gateway].key_sha256
                for i in indexes:
                    sr = batch[i]
                    r = sr.reading
                    seen = existing.get(r.seq)
                    if seen is None:
                        existing[r.seq] = (r.timestamp, r.payload)
                        new_rows.append(dict(gateway_id=gid, seq=r.seq, timestamp=r.timestamp, payload=r.payload,
                                             signature=sr.signature, key_sha256=key_sha256, received_at=now))
                        verdicts[i] = Verdict(i, r.gateway, r.seq, "stored", None, "verified and stored")
                    elif seen == (r.timestamp, r.payload):
                        verdicts[i] = Verdict(i, r.gateway, r.seq, "duplicate", None, "already stored (acknowledged)")
                    else:
                        refuse(i, "REPLAYED_READING", f"gateway {r.gateway!r} already sent a different reading "
                                                      f"with sequence number {r.seq}")
            if new_rows:
                conn.execute(_READINGS.insert(), new_rows)
            if refused:
                conn.execute(_AUDIT.insert(), refused)
        return [v for v in verdicts if v is not None]

    def list_readings(self, gateway: str | None = None, since: int | None = None,
                      limit: int = 100, after: str | None = None) -> list[StoredReading]:
        """Stored readings, oldest first by timestamp (then arrival), optionally of one gateway, from ``since``
        (inclusive), and after the reading whose ``cursor`` is ``after`` (keyset paging: pass the last cursor
        of a page to get the next one, even through many readings with the same timestamp).
        """
        limit = max(1, min(limit, MAX_READINGS_PAGE))
        query = (select(ReadingRow, GatewayRow.name).join(GatewayRow, GatewayRow.id == ReadingRow.gateway_id)
                 .order_by(ReadingRow.timestamp, ReadingRow.id).limit(limit))
        if gateway is not None:
            query = query.where(GatewayRow.name == gateway)
        if since is not None:
            query = query.where(ReadingRow.timestamp >= since)
        if after is not None:
            ts, row_id = parse_cursor(after)
            query = query.where(or_(ReadingRow.timestamp > ts,
                                    and_(ReadingRow.timestamp == ts, ReadingRow.id > row_id)))
        with self.sessions() as s:
            if gateway is not None and s.scalars(select(GatewayRow.id).where(GatewayRow.name == gateway)).first() is None:
                raise _not_found(gateway)
            return [StoredReading(name, r.seq, r.timestamp, bytes(r.payload), bytes(r.signature), r.key_sha256,
                                  r.received_at, f"{r.timestamp}:{r.id}") for r, name in s.execute(query)]

    # --- audit ----------------------------------------------------------------------------------------------

    def _refuse(self, action: str, gateway: str | None, code: str, message: str, remote: str | None,
                detail: dict[str, Any] | None = None) -> None:
        """Record a refused attempt, then raise it as ``VerificationError``."""
        self.audit(action, gateway, code, message, remote, detail)
        raise VerificationError(code, message)

    def audit(self, action: str, gateway: str | None, code: str, message: str, remote: str | None = None,
              detail: dict[str, Any] | None = None) -> None:
        """Append one audit-log row (never put keys, tokens or payloads in ``message``/``detail``)."""
        with self.sessions.begin() as s:
            s.add(AuditRow(at=self.now(), action=_text(action, 32),
                           gateway=(gateway or None) and _text(gateway, 64),
                           code=_text(code, 64), message=_text(message, _MESSAGE_LIMIT),
                           remote=remote and _text(remote, 64),
                           detail=json.dumps(detail) if detail is not None else None))

    def audit_events(self, limit: int = 100) -> list[AuditEvent]:
        """The most recent audit-log entries, newest first."""
        with self.sessions() as s:
            rows = s.scalars(select(AuditRow).order_by(AuditRow.id.desc()).limit(max(1, min(limit, 1000))))
            return [AuditEvent(r.at, r.action, r.gateway, r.code, r.message, r.remote,
                               json.loads(r.detail) if r.detail else None) for r in rows]
