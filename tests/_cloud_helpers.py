"""Helpers for the verifier and cloud tests: real simulated-platform evidence, database backends, a running service.

Evidence is made the way the gateway makes it: an enclave image is EINITed on a :class:`SimPlatform`, its REPORT
(REPORTDATA = ``bind_key(public key, nonce)``) goes to the simulated quoting enclave, and the quote, the public key
and the nonce form the evidence. No mocks: dcap-qvl verifies these quotes for real.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sgx_iot.platform.sim import SimEnclaveRuntime, SimPlatform, build_collateral
from sgx_iot.sgx.attributes import Attributes
from sgx_iot.sgx.keybinding import bind_key
from sgx_iot.sgx.measure import EnclaveImage, Page
from sgx_iot.sgx.sigstruct import Sigstruct, generate_signing_key
from sgx_iot.verify.evidence import Evidence
from sgx_iot.verify.policy import Policy, TrustRoot

ATTRIBUTES = Attributes(0x4, 0x3)  # MODE64BIT, x87|SSE
DEBUG_FREE_MASK = Attributes(0xFF00FFFFFFFFFFFD, 0xFFFFFFFFFFFFFF1B)  # the SDK default: DEBUG not fixed
ISV_PROD_ID = 7
ISV_SVN = 2


@functools.cache
def signer(index: int = 0) -> rsa.RSAPrivateKey:
    """RSA-3072 e=3 enclave signing keys (slow to make: once per session)."""
    return generate_signing_key()


def enclave(content: bytes = b"sgx-iot test enclave", *, isv_svn: int = ISV_SVN, isv_prod_id: int = ISV_PROD_ID,
            signer_index: int = 0) -> tuple[EnclaveImage, Sigstruct]:
    """A small enclave image and its signed SIGSTRUCT."""
    image = EnclaveImage(size=0x4000, ssa_frame_size=1,
                         pages=(Page(0, 0x203, content.ljust(4096, b"\0")), Page(0x1000, 0x201, bytes(4096))))
    sigstruct = Sigstruct.build(enclave_hash=image.mrenclave(), isv_prod_id=isv_prod_id, isv_svn=isv_svn,
                                attributes=ATTRIBUTES, attribute_mask=DEBUG_FREE_MASK,
                                release=False).sign(signer(signer_index))
    return image, sigstruct


def pem(key: ec.EllipticCurvePublicKey) -> str:
    """PEM SubjectPublicKeyInfo."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass
class SimWorld:
    """A simulated platform with a launched enclave, able to produce evidence for any nonce."""

    folder: Path
    platform: SimPlatform
    runtime: SimEnclaveRuntime
    keys: dict[str, ec.EllipticCurvePrivateKey] = field(default_factory=dict)

    @property
    def root_der(self) -> bytes:
        return self.platform.store.pki.root_der()

    @property
    def mrenclave(self) -> bytes:
        return self.runtime.identity.mrenclave

    @property
    def mrsigner(self) -> bytes:
        return self.runtime.identity.mrsigner

    def collateral(self) -> dict[str, Any]:
        """Fresh collateral for the platform's current TCB configuration (QuoteCollateralV3 JSON object)."""
        return json.loads(build_collateral(self.platform.store).to_json())

    def key(self, name: str = "gw") -> ec.EllipticCurvePrivateKey:
        """The gateway key called ``name`` (stands for the key the enclave holds)."""
        if name not in self.keys:
            self.keys[name] = ec.generate_private_key(ec.SECP256R1())
        return self.keys[name]

    def evidence(self, nonce: bytes, key: str = "gw", *, claimed_key: ec.EllipticCurvePublicKey | None = None,
                 runtime: SimEnclaveRuntime | None = None, with_collateral: bool = True) -> Evidence:
        """Evidence binding key ``key`` and ``nonce`` in a quote; ``claimed_key`` puts another key in the bundle."""
        rt = runtime or self.runtime
        public = self.key(key).public_key()
        quote = rt.get_quote(rt.create_report(rt.qe_target_info(), bind_key(public, nonce)))
        identity = rt.identity
        return Evidence("simulated", quote, pem(claimed_key or public), nonce,
                        {"mrenclave": identity.mrenclave.hex(), "mrsigner": identity.mrsigner.hex(),
                         "isv_prod_id": identity.isv_prod_id, "isv_svn": identity.isv_svn,
                         "debug": identity.debug},
                        self.collateral() if with_collateral else None)

    def policy(self, **overrides: Any) -> Policy:
        """A policy trusting this platform's root and allowing this enclave's MRENCLAVE."""
        values: dict[str, Any] = dict(mrenclaves=frozenset({self.mrenclave}),
                                      roots=(TrustRoot.from_der(self.root_der, "sgx-iot simulation root"),))
        values.update(overrides)
        return Policy(**values)


def make_world(folder: Path) -> SimWorld:
    """A new simulated platform in ``folder`` with the default test enclave launched."""
    platform = SimPlatform(folder)
    image, sigstruct = enclave()
    return SimWorld(folder, platform, platform.launch(image, sigstruct))


# --- databases ----------------------------------------------------------------------------------------------------

POSTGRES_URL = os.environ.get("SGX_IOT_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", pytest.param("postgresql", marks=[
    pytest.mark.postgres,
    pytest.mark.skipif(not POSTGRES_URL, reason="SGX_IOT_TEST_POSTGRES_URL is not set"),
])]


@dataclass(frozen=True)
class Database:
    """A database for one test: a SQLite file, or a fresh PostgreSQL schema (dropped afterwards)."""

    url: str
    schema: str | None

    def engine(self) -> sqlalchemy.Engine:
        from sgx_iot.cloud.db import make_engine

        return make_engine(self.url, schema=self.schema)

    def count(self, table: str, where: str = "") -> int:
        """Rows in ``table`` (for "nothing was stored" assertions), read with a separate connection."""
        engine = self.engine()
        try:
            with engine.connect() as c:
                return int(c.execute(sqlalchemy.text(f"SELECT COUNT(*) FROM {table} {where}")).scalar_one())
        finally:
            engine.dispose()


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """Each test using it runs on SQLite, and on PostgreSQL when SGX_IOT_TEST_POSTGRES_URL is set."""
    if request.param == "sqlite":
        yield Database(f"sqlite:///{tmp_path / 'cloud.db'}", None)
        return
    assert POSTGRES_URL is not None
    schema = "sgx_iot_test_" + secrets.token_hex(6)
    admin = sqlalchemy.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield Database(POSTGRES_URL, schema)
    finally:
        with admin.connect() as c:
            c.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


# --- a running service ----------------------------------------------------------------------------------------

ADMIN_TOKEN = "test-admin-token-" + "x" * 16


class Clock:
    """A settable clock for the service (defaults to the wall clock plus an offset)."""

    def __init__(self) -> None:
        import time

        self._time = time.time
        self.offset = 0.0

    def __call__(self) -> float:
        return self._time() + self.offset


@dataclass
class Cloud:
    """A running cloud service with its HTTP client and database."""

    url: str
    client: httpx.Client
    database: Database
    settings: Any
    clock: Clock
    app: Any

    def challenge(self) -> bytes:
        r = self.client.post("/v1/challenges")
        assert r.status_code == 201, r.text
        return bytes.fromhex(r.json()["nonce"])

    def register(self, name: str, evidence: Evidence) -> httpx.Response:
        return self.client.post("/v1/gateways", json={"name": name, "evidence": evidence.to_dict()})

    def counts(self) -> dict[str, int]:
        return {t: self.database.count(t) for t in ("gateways", "attestations", "readings", "audit_log")}


def start_cloud(home: Path, database: Database, policy: Policy, **settings: Any) -> tuple[Cloud, Any]:
    """Create the app for ``policy`` on ``database`` and serve it on a free loopback port."""
    from sgx_iot.cloud.api import create_app
    from sgx_iot.cloud.server import BackgroundServer
    from sgx_iot.cloud.settings import Settings

    clock = Clock()
    s = Settings(home=home, policy=policy, db_url=database.url, db_schema=database.schema,
                 admin_token=ADMIN_TOKEN, **settings)
    app = create_app(s, clock=clock)
    server = BackgroundServer(app).start()
    client = httpx.Client(base_url=server.url, timeout=30)
    return Cloud(server.url, client, database, s, clock, app), server
