"""Cloud storage: migrations, schema constraints, settings, and the service logic without HTTP.

Runs on a SQLite file, and on PostgreSQL (a fresh schema per test) when SGX_IOT_TEST_POSTGRES_URL is set.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
import sqlalchemy
from _cloud_helpers import Database, SimWorld, database, make_world  # noqa: F401  (fixture)
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.exc import IntegrityError

from sgx_iot.cloud import db
from sgx_iot.cloud.models import Base
from sgx_iot.cloud.service import CloudService, NotFoundError
from sgx_iot.cloud.settings import Settings, default_home, from_environment, load_settings
from sgx_iot.errors import UsageError, VerificationError
from sgx_iot.verify.policy import Policy
from sgx_iot.verify.readings import Reading, SignedReading, sign_reading

TABLES = {"gateways", "attestations", "challenges", "readings", "audit_log", "alembic_version"}


@pytest.fixture
def world(tmp_path: Path) -> SimWorld:
    return make_world(tmp_path / "platform")


@pytest.fixture
def engine(database: Database):  # type: ignore[no-untyped-def]  # noqa: F811
    e = database.engine()
    db.migrate(e)
    yield e
    e.dispose()


def service(engine: sqlalchemy.Engine, world: SimWorld, clock: list[float] | None = None) -> CloudService:
    import time

    from cryptography.hazmat.primitives.asymmetric import ec

    t = clock if clock is not None else [time.time()]
    return CloudService(db.session_factory(engine), world.policy(), ec.generate_private_key(ec.SECP256R1()),
                        clock=lambda: t[0])


# --- migrations ---------------------------------------------------------------------------------------------------

def test_migrations_create_the_model_schema(database: Database) -> None:  # noqa: F811
    e = database.engine()
    try:
        assert db.current_revision(e) is None
        db.migrate(e)
        db.migrate(e)  # idempotent
        assert db.current_revision(e) == "0002"
        assert TABLES <= set(sqlalchemy.inspect(e).get_table_names())
        with e.connect() as c:
            diff = compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), Base.metadata)
        assert diff == [], diff
        db.downgrade(e)
        assert not (TABLES - {"alembic_version"}) & set(sqlalchemy.inspect(e).get_table_names())
        db.migrate(e)
        assert db.current_revision(e) == "0002"
    finally:
        e.dispose()


def test_upgrade_from_0001_keeps_data(database: Database) -> None:  # noqa: F811
    e = database.engine()
    try:
        db.migrate(e, "0001")
        with e.begin() as c:
            c.execute(sqlalchemy.text(
                "INSERT INTO gateways (name, created_at, updated_at, public_key_pem, key_sha256, platform, mrenclave, "
                "mrsigner, isv_prod_id, isv_svn, tcb_status, advisory_ids, policy_id) VALUES "
                "('old', 1, 1, 'pem', 'k', 'simulated', 'm', 's', 0, 0, 'UpToDate', '[]', 'p')"))
        db.migrate(e)
        with e.connect() as c:
            row = c.execute(sqlalchemy.text("SELECT name, platform_id FROM gateways")).one()
        assert tuple(row) == ("old", None)
        db.downgrade(e, "0001")
        with e.connect() as c:
            assert c.execute(sqlalchemy.text("SELECT name FROM gateways")).scalar_one() == "old"
    finally:
        e.dispose()


def test_migration_files_ship_inside_the_package() -> None:
    assert (db.MIGRATIONS / "env.py").is_file()
    assert (db.MIGRATIONS / "script.py.mako").is_file()
    assert list((db.MIGRATIONS / "versions").glob("0001_*.py")) and list((db.MIGRATIONS / "versions").glob("0002_*.py"))


def test_reading_sequence_numbers_are_unique_per_gateway(engine: sqlalchemy.Engine) -> None:
    insert_gateway = sqlalchemy.text(
        "INSERT INTO gateways (name, created_at, updated_at, public_key_pem, key_sha256, platform, mrenclave, "
        "mrsigner, isv_prod_id, isv_svn, tcb_status, advisory_ids, policy_id) VALUES "
        "(:n, 0, 0, '', '', 'simulated', '', '', 0, 0, '', '[]', '')")
    insert_reading = sqlalchemy.text(
        "INSERT INTO readings (gateway_id, seq, timestamp, payload, signature, key_sha256, received_at) "
        "VALUES (:g, :s, 0, :p, :p, '', 0)")
    with engine.begin() as c:
        c.execute(insert_gateway, {"n": "a"})
        c.execute(insert_gateway, {"n": "b"})
        ids = dict(c.execute(sqlalchemy.text("SELECT name, id FROM gateways")).all())
        c.execute(insert_reading, {"g": ids["a"], "s": 1, "p": b"x"})
        c.execute(insert_reading, {"g": ids["b"], "s": 1, "p": b"x"})
    with pytest.raises(IntegrityError), engine.begin() as c:
        c.execute(insert_reading, {"g": ids["a"], "s": 1, "p": b"y"})
    with pytest.raises(IntegrityError), engine.begin() as c:
        c.execute(insert_gateway, {"n": "a"})
    with pytest.raises(IntegrityError), engine.begin() as c:
        c.execute(insert_reading, {"g": 999_999, "s": 5, "p": b"x"})  # foreign key


def test_engine_urls() -> None:
    with pytest.raises(UsageError):
        db.make_engine("not a url")
    with pytest.raises(UsageError):
        db.make_engine("mysql://x@localhost/db")
    with pytest.raises(UsageError):
        db.make_engine("postgresql+psycopg://x@localhost/db", schema="bad;name")


# --- settings -----------------------------------------------------------------------------------------------------

def test_default_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SGX_IOT_CLOUD_HOME", str(tmp_path / "c"))
    assert default_home() == tmp_path / "c"
    monkeypatch.delenv("SGX_IOT_CLOUD_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_home() == tmp_path / "xdg" / "sgx-iot" / "cloud"
    s = Settings(home=tmp_path / "h", policy=Policy(mrenclaves=frozenset({bytes(32)})))
    assert s.db_url == f"sqlite:///{(tmp_path / 'h').resolve() / 'cloud.db'}"


def test_verifier_key_created_private_and_stable(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, policy=Policy(mrenclaves=frozenset({bytes(32)})))
    k1 = s.verifier_key()
    assert stat.S_IMODE(os.stat(s.verifier_key_path).st_mode) == 0o600
    assert s.verifier_key().private_numbers() == k1.private_numbers()
    s.verifier_key_path.write_text("garbage")
    with pytest.raises(UsageError):
        s.verifier_key()


def test_load_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SGX_IOT_CLOUD_ADMIN_TOKEN", raising=False)
    with pytest.raises(UsageError, match="no appraisal policy"):
        load_settings(home=tmp_path)
    policy = Policy(mrenclaves=frozenset({bytes(32)}))
    (tmp_path / "policy.toml").write_text(policy.to_toml())
    s = load_settings(home=tmp_path)
    assert s.policy.id == policy.id and s.admin_token is None
    (tmp_path / "token").write_text("a-long-enough-admin-token\n")
    s = load_settings(home=tmp_path, admin_token_file=tmp_path / "token")
    assert s.admin_token == "a-long-enough-admin-token"
    assert "a-long-enough" not in repr(s)
    (tmp_path / "short").write_text("short")
    with pytest.raises(UsageError, match="at least 16"):
        load_settings(home=tmp_path, admin_token_file=tmp_path / "short")
    with pytest.raises(UsageError):
        load_settings(home=tmp_path, admin_token_file=tmp_path / "missing")
    with pytest.raises(UsageError):
        load_settings(home=tmp_path, collateral_file=tmp_path / "c.json", pccs_url="http://127.0.0.1:1")
    monkeypatch.setenv("SGX_IOT_CLOUD_ADMIN_TOKEN", "token-from-the-environment")
    assert load_settings(home=tmp_path).admin_token == "token-from-the-environment"


def test_settings_travel_to_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings(home=tmp_path, policy=Policy(mrenclaves=frozenset({bytes(32)})), admin_token="t" * 20,
                 max_batch=7)
    for k, v in s.to_environment().items():
        monkeypatch.setenv(k, v)
    back = from_environment()
    assert back.policy.id == s.policy.id and back.admin_token == s.admin_token and back.max_batch == 7
    assert back.db_url == s.db_url


# --- service logic (no HTTP) --------------------------------------------------------------------------------------

def test_challenge_is_single_use_and_consumed_only_by_success(engine: sqlalchemy.Engine, world: SimWorld) -> None:
    svc = service(engine, world)
    c = svc.issue_challenge()
    assert len(c.nonce) == 32 and c.expires_at - c.created_at == world.policy().nonce_lifetime
    swapped = world.evidence(c.nonce, claimed_key=world.key("attacker").public_key())
    with pytest.raises(VerificationError) as info:
        svc.register("gw", swapped)
    assert info.value.code == "KEY_BINDING_MISMATCH"
    reg = svc.register("gw", world.evidence(c.nonce))  # the failed attempt did not consume the nonce
    assert reg.created and reg.key_changed
    with pytest.raises(VerificationError) as info:
        svc.register("gw", world.evidence(c.nonce))
    assert info.value.code == "NONCE_UNKNOWN"
    assert [e.code for e in svc.audit_events()] == ["NONCE_UNKNOWN", "KEY_BINDING_MISMATCH"]


def test_nonce_expiry_uses_the_policy_lifetime(engine: sqlalchemy.Engine, world: SimWorld) -> None:
    clock = [1_000_000.0]
    svc = service(engine, world, clock)
    import time

    clock[0] = time.time()
    c = svc.issue_challenge()
    clock[0] += world.policy().nonce_lifetime + 1
    with pytest.raises(VerificationError) as info:
        svc.register("gw", world.evidence(c.nonce))
    assert info.value.code == "NONCE_EXPIRED"
    assert svc.list_gateways() == []


def test_old_challenges_are_forgotten(engine: sqlalchemy.Engine, world: SimWorld) -> None:
    clock = [1_000_000.0]
    svc = service(engine, world, clock)
    old = svc.issue_challenge()
    clock[0] += 86_400 + world.policy().nonce_lifetime + 1
    svc.issue_challenge()
    with engine.connect() as c:
        nonces = [r[0] for r in c.execute(sqlalchemy.text("SELECT nonce FROM challenges"))]
    assert old.nonce.hex() not in nonces and len(nonces) == 1


def test_concurrent_registrations_with_one_nonce(engine: sqlalchemy.Engine, world: SimWorld) -> None:
    svc = service(engine, world)
    c = svc.issue_challenge()
    evidence = [world.evidence(c.nonce, key=f"k{i}") for i in range(4)]
    outcomes: list[str] = []

    def attempt(i: int) -> None:
        try:
            svc.register(f"gw{i}", evidence[i])
            outcomes.append("ok")
        except VerificationError as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["NONCE_UNKNOWN"] * 3 + ["ok"]
    assert len(svc.list_gateways()) == 1


def test_ingest_and_queries(engine: sqlalchemy.Engine, world: SimWorld) -> None:
    svc = service(engine, world)
    assert svc.register("gw", world.evidence(svc.issue_challenge().nonce)).gateway.next_seq == 0
    key = world.key()

    def signed(seq: int, payload: bytes, ts: int = 100, gateway: str = "gw") -> SignedReading:
        r = Reading(gateway, seq, ts, payload)
        return SignedReading(r, sign_reading(r, key))

    verdicts = svc.ingest([signed(1, b"a"), signed(2, b"b", 200), signed(1, b"a"), signed(2, b"other"),
                           signed(3, b"c", gateway="nobody")])
    assert [(v.status, v.code) for v in verdicts] == [
        ("stored", None), ("stored", None), ("duplicate", None), ("refused", "REPLAYED_READING"),
        ("refused", "UNKNOWN_GATEWAY")]
    assert [v.acknowledged for v in verdicts] == [True, True, True, False, False]
    assert svc.get_gateway("gw").next_seq == 3 and [g.next_seq for g in svc.list_gateways()] == [3]
    again = svc.ingest([signed(1, b"a"), signed(2, b"b", 200)])  # re-signed: new signatures, same readings
    assert [v.status for v in again] == ["duplicate", "duplicate"]
    stored = svc.list_readings("gw")
    assert [(r.seq, r.payload) for r in stored] == [(1, b"a"), (2, b"b")]
    assert [r.seq for r in svc.list_readings(since=150)] == [2]
    assert [r.seq for r in svc.list_readings(limit=1)] == [1]
    with pytest.raises(NotFoundError):
        svc.list_readings("nobody")
    with pytest.raises(NotFoundError):
        svc.get_gateway("nobody")
    with pytest.raises(NotFoundError):
        svc.revoke("nobody")
    info = svc.revoke("gw", "stolen")
    assert info.status == "revoked" and info.revoked_reason == "stolen"
    assert svc.revoke("gw").revoked_at == info.revoked_at  # idempotent
    assert [v.code for v in svc.ingest([signed(9, b"z")])] == ["GATEWAY_REVOKED"]
    with pytest.raises(VerificationError) as exc:
        svc.register("gw", world.evidence(svc.issue_challenge().nonce))
    assert exc.value.code == "GATEWAY_REVOKED"
    assert len(svc.list_readings()) == 2


def test_concurrent_batches_store_each_reading_once(engine: sqlalchemy.Engine, world: SimWorld) -> None:
    svc = service(engine, world)
    svc.register("gw", world.evidence(svc.issue_challenge().nonce))
    key = world.key()
    batch = [SignedReading(r, sign_reading(r, key)) for r in (Reading("gw", i, i, b"p") for i in range(50))]
    results: list[list[str]] = []

    def send() -> None:
        results.append([v.status for v in svc.ingest(batch)])

    threads = [threading.Thread(target=send) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(svc.list_readings(limit=1000)) == 50
    assert all(set(r) <= {"stored", "duplicate"} for r in results)
    assert sum(r.count("stored") for r in results) == 50


def test_ingest_async_stores_off_the_event_loop(engine: sqlalchemy.Engine, world: SimWorld) -> None:
    """The HTTP path (ingest_async) runs the storing transaction on the store thread, not on the event loop's
    thread (which must stay free while SQLite commits), for small and large (parallel-verified) batches alike,
    with the same verdicts as ingest()."""
    import asyncio

    svc = service(engine, world)
    svc.register("gw", world.evidence(svc.issue_challenge().nonce))
    key = world.key()
    writers: list[int] = []

    def on_execute(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO READINGS"):
            writers.append(threading.get_ident())

    sqlalchemy.event.listen(engine, "before_cursor_execute", on_execute)
    try:
        for first, size in ((0, 3), (100, 40)):
            readings = [Reading("gw", first + i, i, b"p%d" % i) for i in range(size)]
            batch = [SignedReading(r, sign_reading(r, key)) for r in readings]
            batch[1] = SignedReading(batch[1].reading, batch[2].signature)  # one forged signature

            async def post(batch: list[SignedReading] = batch) -> tuple[int, list[tuple[str, str | None]]]:
                verdicts = await svc.ingest_async(batch)
                return threading.get_ident(), [(v.status, v.code) for v in verdicts]

            loop_thread, verdicts = asyncio.run(post())
            assert verdicts == [("stored", None), ("refused", "BAD_SIGNATURE")] + [("stored", None)] * (size - 2)
            assert writers and writers[-1] != loop_thread
            assert [(v.status, v.code) for v in svc.ingest(batch)] == (
                [("duplicate", None), ("refused", "BAD_SIGNATURE")] + [("duplicate", None)] * (size - 2))
    finally:
        sqlalchemy.event.remove(engine, "before_cursor_execute", on_execute)


def test_an_in_memory_database_is_one_database_for_every_thread(world: SimWorld) -> None:
    """sqlite:// (in memory): the store thread of ingest_async and the caller's thread see the same database."""
    import asyncio

    engine = db.make_engine("sqlite://")
    db.migrate(engine)
    svc = service(engine, world)
    svc.register("gw", world.evidence(svc.issue_challenge().nonce))
    key = world.key()
    for first, size in ((0, 2), (10, 30)):
        readings = [Reading("gw", first + i, i, b"m") for i in range(size)]
        batch = [SignedReading(r, sign_reading(r, key)) for r in readings]
        assert {v.status for v in asyncio.run(svc.ingest_async(batch))} == {"stored"}
    assert len(svc.list_readings(limit=1000)) == 32
    engine.dispose()


def test_sqlite_commits_are_durable_beyond_a_process_crash(tmp_path: Path) -> None:
    """WAL with synchronous=FULL: an acknowledged batch is fsynced before the answer (power-cut safe)."""
    engine = db.make_engine(f"sqlite:///{tmp_path / 'cloud.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # 2 = FULL
    engine.dispose()
