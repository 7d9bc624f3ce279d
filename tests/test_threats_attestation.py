"""Attacks on attestation, through the real HTTP API: each is refused with its stable code and nothing is stored.

The evidence is real (simulated-platform quotes that dcap-qvl verifies); the service runs on a loopback port with
its database; "nothing stored" is checked both through the GET endpoints and by counting rows in the database.
Threats named after docs/threat-model.md.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _cloud_helpers import (ADMIN_TOKEN, ISV_PROD_ID, ISV_SVN, Cloud, Database, SimWorld, enclave, make_world, pem,
                            start_cloud)
from _threat_helpers import batch, real_gateway, signed
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot.platform.sim import SimPlatform
from sgx_iot.verify.collateral import next_update
from sgx_iot.verify.dcap import load_collateral
from sgx_iot.verify.evidence import Evidence
from sgx_iot.verify.policy import Policy

from _cloud_helpers import database  # noqa: F401,E402  (fixture: SQLite, and PostgreSQL when configured)

STORED_TABLES = ("gateways", "attestations", "readings")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> SimWorld:
    return make_world(tmp_path_factory.mktemp("platform"))


@pytest.fixture
def clouds(tmp_path: Path, database: Database) -> Iterator[Callable[..., Cloud]]:  # noqa: F811
    """Start services on ``database`` (the first) or on fresh SQLite files (the others)."""
    started: list[Any] = []

    def start(policy: Policy, *, fresh_db: bool = False) -> Cloud:
        n = len(started)
        db = Database(f"sqlite:///{tmp_path / f'cloud{n}.db'}", None) if fresh_db or n else database
        cloud, server = start_cloud(tmp_path / f"home{n}", db, policy)
        started.append((cloud, server))
        return cloud

    yield start
    for cloud, server in started:
        cloud.client.close()
        server.stop()


@pytest.fixture
def cloud(clouds: Callable[..., Cloud], world: SimWorld) -> Cloud:
    return clouds(world.policy())


def used_nonces(cloud: Cloud) -> int:
    return cloud.database.count("challenges", "WHERE used_at IS NOT NULL")


def assert_refused(cloud: Cloud, response: httpx.Response, code: str, before: dict[str, int],
                   name: str | None = None) -> dict[str, Any]:
    """403 with ``code``; no gateway, attestation or reading row added; one audit-log row; ``name`` unknown."""
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"] and code not in error["message"]
    after = cloud.counts()
    assert {t: after[t] for t in STORED_TABLES} == {t: before[t] for t in STORED_TABLES}
    assert after["audit_log"] == before["audit_log"] + 1
    if name is not None and before["gateways"] == 0:
        assert cloud.client.get("/v1/gateways").json() == []
        missing = cloud.client.get(f"/v1/gateways/{name}")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "GATEWAY_NOT_FOUND"
    return error


def register_ok(cloud: Cloud, name: str, evidence: Evidence) -> dict[str, Any]:
    r = cloud.register(name, evidence)
    assert r.status_code == 201, r.text
    return r.json()


def with_key(evidence: Evidence, key: ec.EllipticCurvePublicKey | str) -> Evidence:
    return dataclasses.replace(evidence, public_key_pem=key if isinstance(key, str) else pem(key))


def corrupt_pem(text: str, index: int, bit: int = 0x01) -> str:
    """The PEM with one bit of its DER flipped (the key as a flaky link or a tampering host would deliver it)."""
    lines = text.strip().splitlines()
    der = bytearray(base64.b64decode("".join(lines[1:-1])))
    der[index] ^= bit
    body = base64.b64encode(bytes(der)).decode()
    return "\n".join([lines[0], *(body[i : i + 64] for i in range(0, len(body), 64)), lines[-1]]) + "\n"


# --- the seed's two DRAFT attacks: the public key swapped or corrupted between enclave and cloud -----------------

def test_impersonation_with_a_swapped_public_key_is_refused(cloud: Cloud, world: SimWorld) -> None:
    nonce = cloud.challenge()
    genuine = world.evidence(nonce, "victim")
    before = cloud.counts()
    attacker = world.key("attacker")
    error = assert_refused(cloud, cloud.register("victim", with_key(genuine, attacker.public_key())),
                           "KEY_BINDING_MISMATCH", before, "victim")
    assert "REPORTDATA" in error["message"] or "bind" in error["message"]
    assert used_nonces(cloud) == 0  # a refused attempt does not burn the genuine gateway's challenge
    # The attacker's readings are refused: its key was never registered under any name.
    r = cloud.client.post("/v1/readings", json=batch([signed(attacker, "victim", 0)]))
    assert r.status_code == 200 and r.json()["verdicts"][0]["code"] == "UNKNOWN_GATEWAY"
    assert cloud.counts()["readings"] == 0
    # The genuine evidence, delivered intact, still registers (with the enclave's key, not the attacker's).
    gateway = register_ok(cloud, "victim", genuine)["gateway"]
    assert gateway["public_key"] == pem(world.key("victim").public_key())


@pytest.mark.parametrize(("damage", "code"), [
    (lambda key: corrupt_pem(pem(key), 40), "PUBLIC_KEY_INVALID"),  # a bit of x flipped: not a curve point
    (lambda key: corrupt_pem(pem(key), 90), "PUBLIC_KEY_INVALID"),  # a bit of y flipped
    (lambda key: pem(ec.generate_private_key(ec.SECP256R1()).public_key()), "KEY_BINDING_MISMATCH"),  # replaced
], ids=["x-bit-flipped", "y-bit-flipped", "replaced"])
def test_corrupted_public_key_is_refused_and_the_gateway_recovers_by_reattesting(
        cloud: Cloud, world: SimWorld, damage: Callable[[ec.EllipticCurvePublicKey], str], code: str) -> None:
    key = world.key("denied")
    register_ok(cloud, "denied", world.evidence(cloud.challenge(), "denied"))
    registered = cloud.client.get("/v1/gateways/denied").json()
    # A re-attestation whose key was damaged between the enclave and the cloud: refused, the registry unchanged.
    damaged = with_key(world.evidence(cloud.challenge(), "denied"), damage(key.public_key()))
    before = cloud.counts()
    assert_refused(cloud, cloud.register("denied", damaged), code, before)
    assert cloud.client.get("/v1/gateways/denied").json() == registered
    # The genuine gateway is not locked out: its readings still verify, and a fresh attestation succeeds.
    r = cloud.client.post("/v1/readings", json=batch([signed(key, "denied", 1)]))
    assert r.json()["stored"] == 1
    again = register_ok(cloud, "denied", world.evidence(cloud.challenge(), "denied"))
    assert again["created"] is False and again["key_changed"] is False
    assert again["gateway"]["key_sha256"] == registered["key_sha256"]


def test_public_key_with_any_bit_flipped_is_refused_with_a_code(cloud: Cloud, world: SimWorld) -> None:
    """Every single-bit corruption of the key's DER (header, curve OID, point) is a 4xx with a code, never a 5xx;
    nothing is stored. (A refused attempt does not consume the nonce, so one evidence serves every variant.)"""
    evidence = world.evidence(cloud.challenge(), "gw")
    genuine = pem(world.key("gw").public_key())
    before = cloud.counts()
    outcomes: dict[tuple[int, int], tuple[int, str]] = {}
    # P-256 SubjectPublicKeyInfo: 26 bytes of header (lengths, algorithm and curve OIDs), then 04 ‖ x ‖ y.
    positions = [(i, bit) for i in range(26) for bit in (0x01, 0x80)] + [(i, 0x01) for i in (26, 27, 40, 58, 59, 90)]
    for index, bit in positions:
        r = cloud.register("gw", with_key(evidence, corrupt_pem(genuine, index, bit)))
        outcomes[(index, bit)] = (r.status_code, r.json()["error"]["code"])
    bad = {k: v for k, v in outcomes.items() if v[0] not in (403, 422)}
    assert not bad, f"5xx or unexpected status for (DER byte, bit): {bad}"
    assert {code for _, code in outcomes.values()} <= {"PUBLIC_KEY_INVALID", "KEY_BINDING_MISMATCH",
                                                        "INVALID_REQUEST"}
    assert {t: cloud.counts()[t] for t in STORED_TABLES} == {t: before[t] for t in STORED_TABLES}
    register_ok(cloud, "gw", evidence)  # the intact evidence still registers


def test_real_gateway_with_a_corrupted_host_key_recovers_by_reattesting(tmp_path: Path,
                                                                       clouds: Callable[..., Cloud]) -> None:
    """The seed's "denial" attack on the real enclave: the host's public_key.pem is overwritten with another key;
    evidence carrying that copy is refused, and the enclave (which re-derives the key from the sealed private key
    at every attestation) makes evidence that registers."""
    from sgx_iot.gateway.attestation import attest
    from sgx_iot.gateway.state import GatewayState, public_key_pem

    gw = real_gateway(tmp_path / "gw")
    cloud = clouds(gw.policy())
    state = GatewayState(gw.state)
    genuine_pem = state.public_key_path.read_text()
    forged = ec.generate_private_key(ec.SECP256R1())
    state.write_public_key(forged.public_key())  # a compromised OS (or bit rot) replaced the host's copy

    nonce = cloud.challenge()
    evidence = attest(state, nonce, collateral=True)
    assert evidence.public_key_pem == genuine_pem  # the enclave's key, not the host's copy
    assert state.public_key_path.read_text() == genuine_pem  # and the host copy was repaired
    before = cloud.counts()
    assert_refused(cloud, cloud.register("gw-real", with_key(evidence, public_key_pem(forged.public_key()))),
                   "KEY_BINDING_MISMATCH", before, "gw-real")
    answer = register_ok(cloud, "gw-real", evidence)
    assert answer["gateway"]["public_key"] == genuine_pem and answer["created"] is True
    # A second attestation after the host copy was garbled again: still the same key, still accepted.
    state.public_key_path.write_text("garbage\n")
    evidence = attest(state, cloud.challenge(), collateral=True)
    again = register_ok(cloud, "gw-real", evidence)
    assert again["key_changed"] is False


# --- freshness: replayed quotes ---------------------------------------------------------------------------------

def test_replayed_evidence_with_a_used_nonce_is_refused(cloud: Cloud, world: SimWorld) -> None:
    evidence = world.evidence(cloud.challenge(), "gw")
    register_ok(cloud, "gw", evidence)
    before = cloud.counts()
    assert_refused(cloud, cloud.register("gw", evidence), "NONCE_UNKNOWN", before)
    before = cloud.counts()
    assert_refused(cloud, cloud.register("gw-copy", evidence), "NONCE_UNKNOWN", before, "gw-copy")
    assert cloud.client.get("/v1/gateways/gw-copy").status_code == 404
    assert cloud.database.count("attestations") == 1


def test_evidence_with_a_nonce_never_issued_is_refused(cloud: Cloud, world: SimWorld) -> None:
    before = cloud.counts()
    assert_refused(cloud, cloud.register("gw", world.evidence(bytes(range(32)), "gw")), "NONCE_UNKNOWN", before, "gw")


def test_evidence_with_a_foreign_nonce_is_refused(cloud: Cloud, clouds: Callable[..., Cloud],
                                                 world: SimWorld) -> None:
    """A nonce another verifier (another cloud deployment) issued is unknown here."""
    other = clouds(world.policy(), fresh_db=True)
    foreign = world.evidence(other.challenge(), "gw")
    before = cloud.counts()
    assert_refused(cloud, cloud.register("gw", foreign), "NONCE_UNKNOWN", before, "gw")
    register_ok(other, "gw", foreign)  # where it was issued, it is fine


def test_evidence_with_an_expired_nonce_is_refused(cloud: Cloud, world: SimWorld) -> None:
    nonce = cloud.challenge()
    evidence = world.evidence(nonce, "late")
    cloud.clock.offset = cloud.settings.policy.nonce_lifetime + 2
    before = cloud.counts()
    assert_refused(cloud, cloud.register("late", evidence), "NONCE_EXPIRED", before, "late")
    assert used_nonces(cloud) == 0


def test_old_quote_relabelled_with_a_fresh_nonce_is_refused(cloud: Cloud, world: SimWorld) -> None:
    old = world.evidence(bytes(32), "gw")  # a quote recorded earlier (for another challenge)
    relabelled = dataclasses.replace(old, nonce=cloud.challenge())
    before = cloud.counts()
    assert_refused(cloud, cloud.register("gw", relabelled), "KEY_BINDING_MISMATCH", before, "gw")
    assert used_nonces(cloud) == 0


# --- evidence the policy must refuse ------------------------------------------------------------------------------

def _debug_enclave(world: SimWorld, nonce: bytes) -> Evidence:
    image, sigstruct = enclave()
    return world.evidence(nonce, "gw", runtime=world.platform.launch(image, sigstruct, debug=True))


def _modified_enclave(world: SimWorld, nonce: bytes) -> Evidence:
    image, sigstruct = enclave(b"sgx-iot test enclave with a backdoor")
    ev = world.evidence(nonce, "gw", runtime=world.platform.launch(image, sigstruct))
    # The bundle's informational claims lie; the verifier reads the identity from the quote.
    return dataclasses.replace(ev, enclave={**ev.enclave, "mrenclave": world.mrenclave.hex()})


@pytest.mark.parametrize(("make", "code"), [
    (_debug_enclave, "DEBUG_ENCLAVE"),
    (_modified_enclave, "MRENCLAVE_NOT_ALLOWED"),
], ids=["debug-enclave", "enclave-not-in-reference-values"])
def test_evidence_from_an_enclave_the_policy_refuses(cloud: Cloud, world: SimWorld,
                                                     make: Callable[[SimWorld, bytes], Evidence], code: str) -> None:
    evidence = make(world, cloud.challenge())
    before = cloud.counts()
    assert_refused(cloud, cloud.register("gw", evidence), code, before, "gw")
    assert used_nonces(cloud) == 0


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"signer_index": 1}, "MRSIGNER_NOT_ALLOWED"),
    ({"isv_prod_id": ISV_PROD_ID + 1}, "ISVPRODID_NOT_ALLOWED"),
    ({"isv_svn": ISV_SVN - 1}, "ISVSVN_TOO_LOW"),
], ids=["other-signer", "other-product", "older-version"])
def test_evidence_outside_signer_reference_values(clouds: Callable[..., Cloud], world: SimWorld,
                                                  kwargs: dict[str, int], code: str) -> None:
    cloud = clouds(world.policy(mrenclaves=frozenset(), mrsigners=frozenset({world.mrsigner}),
                                isv_prod_id=ISV_PROD_ID, min_isv_svn=ISV_SVN))
    register_ok(cloud, "genuine", world.evidence(cloud.challenge(), "genuine"))  # the reference enclave passes
    image, sigstruct = enclave(**kwargs)
    evidence = world.evidence(cloud.challenge(), "gw", runtime=world.platform.launch(image, sigstruct))
    before = cloud.counts()
    assert_refused(cloud, cloud.register("gw", evidence), code, before)
    assert cloud.client.get("/v1/gateways/gw").status_code == 404


@pytest.mark.parametrize(("change", "code"), [
    (lambda store: store.set_tcb("OutOfDate", ["INTEL-SA-00615"]), "TCB_STATUS_NOT_ACCEPTED"),
    (lambda store: store.set_tcb("Revoked"), "TCB_REVOKED"),
    (lambda store: store.set_pck_revoked(True), "CERTIFICATE_REVOKED"),
], ids=["tcb-out-of-date", "tcb-revoked", "pck-revoked"])
def test_evidence_from_a_platform_the_policy_refuses(cloud: Cloud, world: SimWorld,
                                                     change: Callable[[Any], None], code: str) -> None:
    store = world.platform.store
    try:
        change(store)
        evidence = world.evidence(cloud.challenge(), "gw")
    finally:
        store.set_tcb("UpToDate")
        store.set_pck_revoked(False)
    before = cloud.counts()
    error = assert_refused(cloud, cloud.register("gw", evidence), code, before, "gw")
    if code == "TCB_STATUS_NOT_ACCEPTED":
        assert "OutOfDate" in error["message"]


def test_evidence_with_expired_collateral_is_refused(cloud: Cloud, world: SimWorld) -> None:
    expiry = next_update(load_collateral(world.collateral()))
    cloud.clock.offset = expiry + 60 - cloud.clock._time()  # the service's clock is now past the collateral
    evidence = world.evidence(cloud.challenge(), "gw")  # a fresh nonce: only the collateral is stale
    before = cloud.counts()
    error = assert_refused(cloud, cloud.register("gw", evidence), "COLLATERAL_EXPIRED", before, "gw")
    assert "expired" in error["message"]


def test_evidence_from_an_untrusted_simulated_root_is_refused(clouds: Callable[..., Cloud], world: SimWorld) -> None:
    cloud = clouds(Policy(mrenclaves=frozenset({world.mrenclave})))  # trusts Intel only, as production does
    before = cloud.counts()
    error = assert_refused(cloud, cloud.register("gw", world.evidence(cloud.challenge(), "gw")), "UNTRUSTED_ROOT",
                           before, "gw")
    assert "simulated" in error["message"]


def test_evidence_from_another_simulated_platform_is_refused(cloud: Cloud, world: SimWorld, tmp_path: Path) -> None:
    """The policy lists one simulated root; a second simulated machine has its own, which is not listed."""
    image, sigstruct = enclave()
    other = SimPlatform(tmp_path / "other-platform").launch(image, sigstruct)
    before = cloud.counts()
    assert_refused(cloud, cloud.register("gw", world.evidence(cloud.challenge(), "gw", runtime=other)),
                   "UNTRUSTED_ROOT", before, "gw")


# --- refused re-keying leaves a registered gateway intact -------------------------------------------------------

@pytest.mark.parametrize("attack", ["swapped-key", "debug-enclave", "modified-enclave", "used-nonce"])
def test_refused_attestation_never_changes_a_registered_key(cloud: Cloud, world: SimWorld, attack: str) -> None:
    first = world.evidence(cloud.challenge(), "gw")
    register_ok(cloud, "gw", first)
    registered = cloud.client.get("/v1/gateways/gw").json()
    nonce = cloud.challenge()
    evidence, code = {
        "swapped-key": lambda: (with_key(world.evidence(nonce, "gw"), world.key("mallory").public_key()),
                                "KEY_BINDING_MISMATCH"),
        "debug-enclave": lambda: (_debug_enclave(world, nonce), "DEBUG_ENCLAVE"),
        "modified-enclave": lambda: (_modified_enclave(world, nonce), "MRENCLAVE_NOT_ALLOWED"),
        "used-nonce": lambda: (first, "NONCE_UNKNOWN"),
    }[attack]()
    before = cloud.counts()
    assert_refused(cloud, cloud.register("gw", evidence), code, before)
    assert cloud.client.get("/v1/gateways/gw").json() == registered
    r = cloud.client.post("/v1/readings", json=batch([signed(world.key("gw"), "gw", 7)]))
    assert r.json()["stored"] == 1


def test_revoked_gateway_cannot_register_again(cloud: Cloud, world: SimWorld) -> None:
    register_ok(cloud, "gw", world.evidence(cloud.challenge(), "gw"))
    r = cloud.client.post("/v1/gateways/gw/revoke", json={"reason": "stolen"},
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    before = cloud.counts()
    assert_refused(cloud, cloud.register("gw", world.evidence(cloud.challenge(), "gw")), "GATEWAY_REVOKED", before)
    evidence = world.evidence(cloud.challenge(), "fresh-key")
    before = cloud.counts()
    assert_refused(cloud, cloud.register("gw", evidence), "GATEWAY_REVOKED", before)
    assert cloud.client.get("/v1/gateways/gw").json()["status"] == "revoked"


# --- a name belongs to the platform that registered it; the platform kind comes from the root ------------------

def test_another_attested_platform_cannot_take_over_a_gateway_name(clouds: Callable[..., Cloud], world: SimWorld,
                                                                   tmp_path: Path) -> None:
    """Gateway A's compromised OS runs the genuine enclave on its own (genuine) platform and tries to register A's
    enclave key under gateway B's name, to then sign readings "from B" inside A's enclave."""
    from sgx_iot.verify.policy import TrustRoot

    world_a = make_world(tmp_path / "platform-a")
    roots = (TrustRoot.from_der(world.root_der, "b"), TrustRoot.from_der(world_a.root_der, "a"))
    cloud = clouds(world.policy(roots=roots))
    register_ok(cloud, "gw-b", world.evidence(cloud.challenge(), "b"))
    register_ok(cloud, "gw-a", world_a.evidence(cloud.challenge(), "a"))
    registered = cloud.client.get("/v1/gateways/gw-b").json()
    evidence = world_a.evidence(cloud.challenge(), "a")
    before = cloud.counts()
    assert_refused(cloud, cloud.register("gw-b", evidence), "GATEWAY_NAME_TAKEN", before)
    assert used_nonces(cloud) == 2  # the refused attempt consumed nothing
    assert cloud.client.get("/v1/gateways/gw-b").json() == registered
    forged = cloud.client.post("/v1/readings", json=batch([signed(world_a.key("a"), "gw-b", 1)])).json()
    assert forged["verdicts"][0]["code"] == "BAD_SIGNATURE"
    # B itself may still re-key from its own platform (a re-provisioned gateway).
    again = register_ok(cloud, "gw-b", world.evidence(cloud.challenge(), "b-new-key"))
    assert again["key_changed"] is True


def test_simulated_evidence_cannot_claim_real_sgx(cloud: Cloud, world: SimWorld) -> None:
    """The evidence's "platform" field is the gateway's claim; what is recorded (registry and EAR) follows from the
    root the quote chains to."""
    import jwt

    evidence = dataclasses.replace(world.evidence(cloud.challenge(), "gw"), platform="gramine")
    answer = register_ok(cloud, "gw", evidence)
    assert answer["gateway"]["platform"] == "simulated"
    assert cloud.client.get("/v1/gateways/gw").json()["platform"] == "simulated"
    verifier = cloud.client.get("/v1/verifier").json()
    claims = jwt.decode(answer["ear"], verifier["public_key"], algorithms=["ES256"], options={"verify_aud": False})
    assert json.dumps(claims).count('"simulated"') >= 1 and '"gramine"' not in json.dumps(claims)


def test_a_name_without_a_recorded_platform_keeps_its_key(clouds: Callable[..., Cloud], world: SimWorld,
                                                          tmp_path: Path) -> None:
    """A registry row from before platform ids were recorded: only its own key may re-attest the name."""
    import sqlalchemy

    from sgx_iot.verify.policy import TrustRoot

    world_a = make_world(tmp_path / "platform-a")
    roots = (TrustRoot.from_der(world.root_der, "b"), TrustRoot.from_der(world_a.root_der, "a"))
    cloud = clouds(world.policy(roots=roots))
    register_ok(cloud, "gw-b", world.evidence(cloud.challenge(), "b"))
    engine = cloud.database.engine()
    with engine.begin() as c:
        c.execute(sqlalchemy.text("UPDATE gateways SET platform_id = NULL WHERE name = 'gw-b'"))
    engine.dispose()
    before = cloud.counts()
    assert_refused(cloud, cloud.register("gw-b", world_a.evidence(cloud.challenge(), "a")), "GATEWAY_NAME_TAKEN",
                   before)
    again = register_ok(cloud, "gw-b", world.evidence(cloud.challenge(), "b"))
    assert again["key_changed"] is False
