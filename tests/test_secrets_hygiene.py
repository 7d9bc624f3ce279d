"""Secrets hygiene: admin operations need the admin token, and nothing secret is ever logged.

* Revocation (the admin operation) without the token, with a wrong one, or with the wrong scheme is 401 with a
  code, and changes nothing; a service without a configured token refuses it with 403; the comparison is
  ``hmac.compare_digest`` (constant time).
* A full flow — a gateway provisioned and attested by the real enclave, registration with its EAR, readings signed
  in the enclave and uploaded, refused attempts of every kind, revocation — runs against a real cloud process whose
  every logger is at DEBUG. Its log, the gateway's own output and the audit log are then scanned for the admin
  token (and a near-miss guess of it), the EAR tokens, the verifier's private key, the gateway's private key in any
  encoding, and the sealed key blob. None may appear.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _cloud_helpers import ADMIN_TOKEN, Cloud, Database, SimWorld, make_world, start_cloud
from _threat_helpers import CloudProcess, RealGateway, real_gateway, signed
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot.cloud.settings import Settings
from sgx_iot.verify.readings import Reading, SignedReading

WRONG_TOKEN = ADMIN_TOKEN[:-1] + "y"  # an operator's typo: must not be logged either


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> SimWorld:
    return make_world(tmp_path_factory.mktemp("platform"))


@pytest.fixture
def cloud(tmp_path: Path, world: SimWorld) -> Iterator[Cloud]:
    c, server = start_cloud(tmp_path / "home", Database(f"sqlite:///{tmp_path / 'cloud.db'}", None), world.policy())
    assert c.register("gw", world.evidence(c.challenge(), "gw")).status_code == 201
    yield c
    c.client.close()
    server.stop()


# --- the admin token ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("authorization", [
    None, "", "Bearer", f"Bearer {WRONG_TOKEN}", f"Bearer {ADMIN_TOKEN}x", f"Bearer {ADMIN_TOKEN[:-1]}",
    f"Basic {ADMIN_TOKEN}", f"Token {ADMIN_TOKEN}", ADMIN_TOKEN, f"Bearer {ADMIN_TOKEN.upper()}",
    "Bearer " + "x" * 10_000,
], ids=["missing", "empty", "scheme-only", "wrong", "longer", "shorter", "basic", "token-scheme",
        "no-scheme", "case-changed", "huge"])
def test_revocation_without_the_admin_token_is_refused(cloud: Cloud, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    before = cloud.counts()
    r = cloud.client.post("/v1/gateways/gw/revoke", json={"reason": "stolen"}, headers=headers)
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "UNAUTHORIZED"
    assert r.headers.get("www-authenticate", "").lower().startswith("bearer")
    assert cloud.client.get("/v1/gateways/gw").json()["status"] == "active"
    after = cloud.counts()
    assert {k: after[k] for k in ("gateways", "attestations", "readings")} == {
        k: before[k] for k in ("gateways", "attestations", "readings")}


def test_the_token_in_the_query_string_or_body_is_not_accepted(cloud: Cloud) -> None:
    for kwargs in ({"params": {"token": ADMIN_TOKEN}}, {"json": {"reason": "x", "token": ADMIN_TOKEN}},
                   {"headers": {"X-Admin-Token": ADMIN_TOKEN}}):
        r = cloud.client.post("/v1/gateways/gw/revoke", **kwargs)  # type: ignore[arg-type]
        assert r.status_code in (401, 422), r.text
    assert cloud.client.get("/v1/gateways/gw").json()["status"] == "active"


def test_revocation_with_the_admin_token_works_and_is_audited(cloud: Cloud) -> None:
    r = cloud.client.post("/v1/gateways/gw/revoke", json={"reason": "decommissioned"},
                          headers={"Authorization": f"bearer {ADMIN_TOKEN}"})
    assert r.status_code == 200 and r.json()["status"] == "revoked", r.text
    assert r.json()["revoked_reason"] == "decommissioned"
    r = cloud.client.post("/v1/gateways/nobody/revoke", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "GATEWAY_NOT_FOUND"


def test_the_token_is_compared_in_constant_time(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's comparison goes through ``hmac.compare_digest`` (a spy wrapping the real function)."""
    import sgx_iot.cloud.api as api

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(api.hmac, "compare_digest", spy)
    cloud.client.post("/v1/gateways/gw/revoke", headers={"Authorization": f"Bearer {WRONG_TOKEN}"})
    assert (WRONG_TOKEN.encode(), ADMIN_TOKEN.encode()) in calls


def test_without_a_configured_token_admin_operations_are_disabled(tmp_path: Path, world: SimWorld) -> None:
    from sgx_iot.cloud.api import create_app
    from sgx_iot.cloud.server import BackgroundServer

    app = create_app(Settings(home=tmp_path / "home", policy=world.policy(), db_url=f"sqlite:///{tmp_path / 'c.db'}"))
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url) as client:
        for headers in ({}, {"Authorization": f"Bearer {ADMIN_TOKEN}"}, {"Authorization": "Bearer"}):
            r = client.post("/v1/gateways/gw/revoke", headers=headers)
            assert r.status_code == 403 and r.json()["error"]["code"] == "ADMIN_DISABLED", r.text


def test_settings_do_not_show_the_token(tmp_path: Path, world: SimWorld) -> None:
    settings = Settings(home=tmp_path, policy=world.policy(), admin_token=ADMIN_TOKEN)
    assert ADMIN_TOKEN not in repr(settings) and ADMIN_TOKEN not in str(settings)


# --- nothing secret in the logs of a full run ---------------------------------------------------------------------

def _forms(secret: bytes) -> list[str]:
    """Encodings a secret could be logged in (and a prefix long enough to matter)."""
    forms = [secret.hex(), secret.hex().upper(), base64.b64encode(secret).decode(),
             base64.urlsafe_b64encode(secret).decode().rstrip("=")]
    return forms + [f[:24] for f in forms if len(f) > 24]


def _private_key_forms(key: ec.EllipticCurvePrivateKey) -> list[str]:
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    body = [line for line in pem.splitlines() if not line.startswith("-----")]
    return _forms(scalar) + _forms(scalar[::-1]) + [str(key.private_numbers().private_value)] + _forms(der)[:3] + body


def _gateway_private_key(gw: RealGateway) -> ec.EllipticCurvePrivateKey:
    """The test plays the enclave (same image, SIGSTRUCT and platform) to unseal the key it must look for."""
    from sgx_iot.enclave.image import build_image, installed_source_root
    from sgx_iot.platform.sim import SimPlatform
    from sgx_iot.sgx.sealed import SealedData
    from sgx_iot.sgx.sigstruct import Sigstruct

    sigstruct = Sigstruct.parse(gw.sigstruct.read_bytes())
    runtime = SimPlatform(gw.platform).launch(build_image(installed_source_root()), sigstruct)
    blob = SealedData.parse((gw.state / "sealed_key.bin").read_bytes())
    scalar, _ = blob.unseal(runtime.get_key(blob.key_request))
    return ec.derive_private_key(int.from_bytes(scalar, "little"), ec.SECP256R1())


@pytest.mark.parametrize("sql_logging", [False, True], ids=["service-loggers", "with-sqlalchemy-loggers"])
def test_a_full_run_logs_no_secret(tmp_path: Path, caplog: pytest.LogCaptureFixture, sql_logging: bool) -> None:
    """Every logger of the service at DEBUG; with ``sql_logging`` SQLAlchemy's too (its statements and parameters:
    what an operator turns on to debug the database)."""
    from sgx_iot.gateway.attestation import attest
    from sgx_iot.gateway.session import GatewaySession
    from sgx_iot.gateway.state import GatewayState

    caplog.set_level(logging.DEBUG)  # the gateway side runs in this process: capture its loggers too
    gw = real_gateway(tmp_path / "gw")
    state = GatewayState(gw.state)
    policy = gw.policy_toml()
    cloud = CloudProcess(tmp_path / "home", policy, db_url=f"sqlite:///{tmp_path / 'cloud.db'}",
                         log=tmp_path / "cloud.log", log_level="debug", sql_logging=sql_logging).start()
    ears: list[str] = []
    try:
        with httpx.Client(base_url=cloud.url, timeout=30) as client:
            # Registration by attestation (twice: a re-attestation), with the real enclave.
            for _ in range(2):
                nonce = bytes.fromhex(client.post("/v1/challenges").json()["nonce"])
                evidence = attest(state, nonce, collateral=True)
                r = client.post("/v1/gateways", json={"name": "gw-real", "evidence": evidence.to_dict()})
                assert r.status_code == 201, r.text
                ears.append(r.json()["ear"])
            # Readings signed in the enclave, uploaded; then refused ones of every kind.
            readings = [Reading("gw-real", seq, 1_700_000_000 + seq, b"secret-ish payload %d" % seq)
                        for seq in range(20)]
            with GatewaySession(state) as session:
                signatures = session.sign([r.to_bytes() for r in readings]).signatures
            batch = [SignedReading(r, s).to_dict() for r, s in zip(readings, signatures, strict=True)]
            assert client.post("/v1/readings", json={"readings": batch}).json()["stored"] == 20
            forged = signed(ec.generate_private_key(ec.SECP256R1()), "gw-real", 99)
            tampered = {**batch[0], "payload": base64.b64encode(b"changed").decode()}
            answer = client.post("/v1/readings", json={"readings": [forged.to_dict(), tampered, batch[1]]}).json()
            assert [v["status"] for v in answer["verdicts"]] == ["refused", "refused", "duplicate"]
            assert client.post("/v1/gateways", json={"name": "gw-real", "evidence": evidence.to_dict()}
                               ).status_code == 403  # a replayed nonce
            assert client.post("/v1/readings", content=b"{not json",
                               headers={"content-type": "application/json"}).status_code == 400
            # Admin: a wrong token, then the right one.
            assert client.post("/v1/gateways/gw-real/revoke",
                               headers={"Authorization": f"Bearer {WRONG_TOKEN}"}).status_code == 401
            r = client.post("/v1/gateways/gw-real/revoke", json={"reason": "end of test"},
                            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            assert r.status_code == 200, r.text
            assert client.post("/v1/readings", json={"readings": batch[:1]}).json()["refused"] == 1
    finally:
        cloud.stop()

    log = (tmp_path / "cloud.log").read_text(errors="replace")
    assert "DEBUG" in log and "/v1/readings" in log and "/v1/gateways" in log, "the log does not cover the run"
    gateway_output = caplog.text
    audit = json.dumps(sqlite3.connect(tmp_path / "cloud.db").execute("SELECT * FROM audit_log").fetchall())

    verifier_key = serialization.load_pem_private_key((tmp_path / "home" / "verifier-key.pem").read_bytes(), None)
    assert isinstance(verifier_key, ec.EllipticCurvePrivateKey)
    gateway_key = _gateway_private_key(gw)
    sealed = (gw.state / "sealed_key.bin").read_bytes()
    secrets = {
        "admin token": [ADMIN_TOKEN],
        "wrong admin token": [WRONG_TOKEN],
        "EAR token": ears + [ear.rsplit(".", 1)[1] for ear in ears],
        "verifier private key": _private_key_forms(verifier_key),
        "gateway private key": _private_key_forms(gateway_key),
        "sealed key blob": _forms(sealed),
        "PEM private key": ["PRIVATE KEY"],
    }
    for source, text in (("cloud log", log), ("gateway log", gateway_output), ("audit log", audit)):
        leaks = [f"{what}: {form[:12]}…" for what, forms in secrets.items() for form in forms if form in text]
        assert not leaks, f"{source} leaks {leaks}"
