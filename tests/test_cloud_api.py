"""The cloud service through real HTTP on loopback (uvicorn in a thread, httpx), on a real SQLite file — and on
PostgreSQL when SGX_IOT_TEST_POSTGRES_URL is set. Every refusal is checked for its code and for what was stored
(nothing but an audit-log row)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cloud_helpers import ADMIN_TOKEN, Cloud, Database, SimWorld, database, enclave, make_world, start_cloud  # noqa: F401
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot.errors import VerificationError
from sgx_iot.platform.sim import SimPlatform
from sgx_iot.verify.ear import SUBMOD, jwk_public_key, verify_ear
from sgx_iot.verify.readings import Reading, SignedReading, sign_reading, verify_reading

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def world(tmp_path: Path) -> SimWorld:
    return make_world(tmp_path / "platform")


@pytest.fixture
def cloud(tmp_path: Path, database: Database, world: SimWorld) -> Iterator[Cloud]:  # noqa: F811
    c, server = start_cloud(tmp_path / "cloud", database, world.policy(), max_body_bytes=256 * 1024, max_batch=200)
    try:
        yield c
    finally:
        c.client.close()
        server.stop()


def error(response, status: int, code: str) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]["message"]


def register(cloud: Cloud, world: SimWorld, name: str = "gw-1", key: str = "gw") -> dict:
    r = cloud.register(name, world.evidence(cloud.challenge(), key))
    assert r.status_code == 201, r.text
    return r.json()


def signed(world: SimWorld, seq: int, payload: bytes = b"t=21.5", ts: int = 1_700_000_000, gateway: str = "gw-1",
           key: str = "gw") -> dict:
    r = Reading(gateway, seq, ts, payload)
    return SignedReading(r, sign_reading(r, world.key(key))).to_dict()


def upload(cloud: Cloud, *readings: dict) -> dict:
    r = cloud.client.post("/v1/readings", json={"readings": list(readings)})
    assert r.status_code == 200, r.text
    return r.json()


# --- service basics -------------------------------------------------------------------------------------------

def test_health_verifier_and_docs(cloud: Cloud) -> None:
    h = cloud.client.get("/healthz")
    assert h.status_code == 200 and h.json()["status"] == "ok"
    assert h.json()["policy_id"] == cloud.settings.policy.id
    v = cloud.client.get("/v1/verifier").json()
    assert v["jwk"]["crv"] == "P-256" and v["policy_id"] == cloud.settings.policy.id
    assert cloud.client.get("/docs").status_code == 200
    spec = cloud.client.get("/openapi.json").json()
    assert {"/v1/challenges", "/v1/gateways", "/v1/gateways/{name}", "/v1/gateways/{name}/revoke", "/v1/readings",
            "/healthz"} <= set(spec["paths"])


def test_challenge(cloud: Cloud) -> None:
    r = cloud.client.post("/v1/challenges")
    assert r.status_code == 201
    body = r.json()
    assert len(bytes.fromhex(body["nonce"])) == 32
    assert body["expires_in"] == cloud.settings.policy.nonce_lifetime
    assert cloud.client.post("/v1/challenges").json()["nonce"] != body["nonce"]


# --- registration ---------------------------------------------------------------------------------------------

def test_registration_returns_a_verifiable_ear(cloud: Cloud, world: SimWorld) -> None:
    nonce = cloud.challenge()
    r = cloud.register("gw-1", world.evidence(nonce))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["created"] and body["key_changed"]
    gw = body["gateway"]
    assert gw["name"] == "gw-1" and gw["status"] == "active" and gw["platform"] == "simulated"
    assert gw["enclave"]["mrenclave"] == world.mrenclave.hex()
    assert body["appraisal"]["affirming"] is True
    verifier = jwk_public_key(cloud.client.get("/v1/verifier").json()["jwk"])
    claims = verify_ear(body["ear"], verifier, nonce=nonce)
    sub = claims["submods"][SUBMOD]
    assert claims["sub"] == "gw-1" and sub["ear.status"] == "affirming"
    assert sub["ear.appraisal-policy-id"] == cloud.settings.policy.id
    assert jwk_public_key(sub["sgx-iot.key"]).public_numbers() == world.key().public_key().public_numbers()
    with pytest.raises(VerificationError) as info:
        verify_ear(body["ear"], ec.generate_private_key(ec.SECP256R1()).public_key())
    assert info.value.code == "EAR_INVALID"
    assert cloud.client.get("/v1/gateways/gw-1").json() == gw
    assert [g["name"] for g in cloud.client.get("/v1/gateways").json()] == ["gw-1"]
    assert cloud.counts() == {"gateways": 1, "attestations": 1, "readings": 0, "audit_log": 0}


def assert_refused_and_nothing_stored(cloud: Cloud, response, code: str, status: int = 403) -> None:  # type: ignore[no-untyped-def]
    before_audit = cloud.database.count("audit_log")
    error(response, status, code)
    counts = cloud.counts()
    assert (counts["gateways"], counts["attestations"], counts["readings"]) == (0, 0, 0)
    assert counts["audit_log"] == before_audit  # the row was written before the response
    assert cloud.client.get("/v1/gateways").json() == []


def test_swapped_public_key_is_refused(cloud: Cloud, world: SimWorld) -> None:
    ev = world.evidence(cloud.challenge(), claimed_key=world.key("attacker").public_key())
    assert_refused_and_nothing_stored(cloud, cloud.register("gw-1", ev), "KEY_BINDING_MISMATCH")
    assert cloud.database.count("audit_log", "WHERE code = 'KEY_BINDING_MISMATCH' AND gateway = 'gw-1'") == 1


def test_unknown_nonce_is_refused(cloud: Cloud, world: SimWorld) -> None:
    assert_refused_and_nothing_stored(cloud, cloud.register("gw-1", world.evidence(bytes(32))), "NONCE_UNKNOWN")


def test_replayed_nonce_is_refused(cloud: Cloud, world: SimWorld) -> None:
    nonce = cloud.challenge()
    assert cloud.register("gw-1", world.evidence(nonce)).status_code == 201
    before = cloud.counts()
    message = error(cloud.register("gw-2", world.evidence(nonce, "gw2")), 403, "NONCE_UNKNOWN")
    assert "already used" in message
    after = cloud.counts()
    assert {k: after[k] - before[k] for k in after} == {"gateways": 0, "attestations": 0, "readings": 0,
                                                         "audit_log": 1}


def test_expired_nonce_is_refused(cloud: Cloud, world: SimWorld) -> None:
    nonce = cloud.challenge()
    cloud.clock.offset = cloud.settings.policy.nonce_lifetime + 1
    assert_refused_and_nothing_stored(cloud, cloud.register("gw-1", world.evidence(nonce)), "NONCE_EXPIRED")


def test_enclave_from_modified_source_is_refused(cloud: Cloud, world: SimWorld) -> None:
    image, sigstruct = enclave(b"modified enclave source")
    rt = world.platform.launch(image, sigstruct)
    ev = world.evidence(cloud.challenge(), runtime=rt)
    assert_refused_and_nothing_stored(cloud, cloud.register("gw-1", ev), "MRENCLAVE_NOT_ALLOWED")


def test_untrusted_platform_is_refused(cloud: Cloud, world: SimWorld, tmp_path: Path) -> None:
    image, sigstruct = enclave()
    rt = SimPlatform(tmp_path / "other-platform").launch(image, sigstruct)
    ev = world.evidence(cloud.challenge(), runtime=rt)
    assert_refused_and_nothing_stored(cloud, cloud.register("gw-1", ev), "UNTRUSTED_ROOT")


def test_debug_enclave_is_refused(cloud: Cloud, world: SimWorld) -> None:
    image, sigstruct = enclave()
    rt = world.platform.launch(image, sigstruct, debug=True)
    ev = world.evidence(cloud.challenge(), runtime=rt)
    assert_refused_and_nothing_stored(cloud, cloud.register("gw-1", ev), "DEBUG_ENCLAVE")


def test_outdated_platform_is_refused(cloud: Cloud, world: SimWorld) -> None:
    world.platform.store.set_tcb("OutOfDate", ["INTEL-SA-00615"])
    ev = world.evidence(cloud.challenge())
    assert_refused_and_nothing_stored(cloud, cloud.register("gw-1", ev), "TCB_STATUS_NOT_ACCEPTED")


def test_missing_collateral_is_refused(cloud: Cloud, world: SimWorld) -> None:
    ev = world.evidence(cloud.challenge(), with_collateral=False)
    assert_refused_and_nothing_stored(cloud, cloud.register("gw-1", ev), "COLLATERAL_MISSING")


def test_malformed_registrations(cloud: Cloud, world: SimWorld) -> None:
    good = world.evidence(cloud.challenge()).to_dict()
    cases = [
        ({"name": "gw/1", "evidence": good}, "INVALID_REQUEST"),
        ({"name": "x" * 65, "evidence": good}, "INVALID_REQUEST"),
        ({"name": "gw-1"}, "INVALID_REQUEST"),
        ({"name": "gw-1", "evidence": {**good, "quote": "%%%"}}, "INVALID_REQUEST"),
        ({"name": "gw-1", "evidence": {**good, "extra": 1}}, "INVALID_REQUEST"),
        ({"name": "gw-1", "evidence": {**good, "public_key": "nope"}}, "INVALID_REQUEST"),
        ({"name": "gw-1", "evidence": good, "admin": True}, "INVALID_REQUEST"),
        ({"name": 5, "evidence": good}, "INVALID_REQUEST"),
    ]
    for body, code in cases:
        error(cloud.client.post("/v1/gateways", json=body), 422, code)
    bad_quote = {**good, "quote": base64.b64encode(b"not a quote").decode()}
    error(cloud.client.post("/v1/gateways", json={"name": "gw-1", "evidence": bad_quote}), 403, "QUOTE_INVALID")
    counts = cloud.counts()
    assert (counts["gateways"], counts["attestations"]) == (0, 0)


def test_re_attestation_rotates_the_key(cloud: Cloud, world: SimWorld) -> None:
    first = register(cloud, world, key="old")
    upload(cloud, signed(world, 1, key="old"))
    second = register(cloud, world, key="new")
    assert not second["created"] and second["key_changed"]
    assert second["gateway"]["key_sha256"] != first["gateway"]["key_sha256"]
    assert second["gateway"]["created_at"] == first["gateway"]["created_at"]
    result = upload(cloud, signed(world, 2, key="old"), signed(world, 3, key="new"))
    assert [(v["status"], v["code"]) for v in result["verdicts"]] == [("refused", "BAD_SIGNATURE"), ("stored", None)]
    assert register(cloud, world, key="new")["key_changed"] is False
    assert cloud.counts()["attestations"] == 3


# --- revocation -----------------------------------------------------------------------------------------------

def test_revocation_needs_the_admin_token(cloud: Cloud, world: SimWorld) -> None:
    register(cloud, world)
    for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": ADMIN_TOKEN},
                    {"Authorization": "Basic " + ADMIN_TOKEN}):
        r = cloud.client.post("/v1/gateways/gw-1/revoke", headers=headers)
        error(r, 401, "UNAUTHORIZED")
        assert r.headers["www-authenticate"] == "Bearer"
    assert cloud.client.get("/v1/gateways/gw-1").json()["status"] == "active"
    assert cloud.database.count("audit_log", "WHERE code = 'UNAUTHORIZED'") == 4
    error(cloud.client.post("/v1/gateways/nobody/revoke", headers=ADMIN), 404, "GATEWAY_NOT_FOUND")


def test_revoked_gateway_is_refused_everything(cloud: Cloud, world: SimWorld) -> None:
    register(cloud, world)
    upload(cloud, signed(world, 1))
    r = cloud.client.post("/v1/gateways/gw-1/revoke", headers=ADMIN, json={"reason": "device stolen"})
    assert r.status_code == 200 and r.json()["status"] == "revoked" and r.json()["revoked_reason"] == "device stolen"
    before = cloud.counts()
    result = upload(cloud, signed(world, 2))
    assert [(v["status"], v["code"]) for v in result["verdicts"]] == [("refused", "GATEWAY_REVOKED")]
    error(cloud.register("gw-1", world.evidence(cloud.challenge())), 403, "GATEWAY_REVOKED")
    after = cloud.counts()
    assert (after["readings"], after["attestations"]) == (before["readings"], before["attestations"])
    assert after["audit_log"] == before["audit_log"] + 2


# --- readings -------------------------------------------------------------------------------------------------

def test_reading_stored_and_verifiable(cloud: Cloud, world: SimWorld) -> None:
    register(cloud, world)
    result = upload(cloud, signed(world, 1, b"Sensor_Data\n"))
    assert result == {"verdicts": [{"index": 0, "gateway": "gw-1", "seq": 1, "status": "stored", "code": None,
                                    "message": "verified and stored"}], "stored": 1, "duplicates": 0, "refused": 0}
    rows = cloud.client.get("/v1/readings", params={"gateway": "gw-1"}).json()["readings"]
    assert len(rows) == 1
    row = rows[0]
    reading = Reading(row["gateway"], row["seq"], row["timestamp"], base64.b64decode(row["payload"]))
    assert reading.payload == b"Sensor_Data\n"
    verify_reading(reading, base64.b64decode(row["signature"]), world.key().public_key())
    assert row["key_sha256"] == cloud.client.get("/v1/gateways/gw-1").json()["key_sha256"]


def test_duplicate_reading_is_acknowledged_not_stored_twice(cloud: Cloud, world: SimWorld) -> None:
    register(cloud, world)
    first = signed(world, 1)
    upload(cloud, first)
    result = upload(cloud, first, signed(world, 1))  # the same, and the same re-signed
    assert [(v["status"], v["code"]) for v in result["verdicts"]] == [("duplicate", None), ("duplicate", None)]
    assert cloud.counts()["readings"] == 1


def test_replayed_sequence_number_is_refused(cloud: Cloud, world: SimWorld) -> None:
    register(cloud, world)
    upload(cloud, signed(world, 1, b"first"))
    before = cloud.counts()
    result = upload(cloud, signed(world, 1, b"second"), signed(world, 1, b"first", ts=5))
    assert [v["code"] for v in result["verdicts"]] == ["REPLAYED_READING", "REPLAYED_READING"]
    after = cloud.counts()
    assert after["readings"] == before["readings"] and after["audit_log"] == before["audit_log"] + 2
    stored = cloud.client.get("/v1/readings").json()["readings"]
    assert [base64.b64decode(r["payload"]) for r in stored] == [b"first"]


def test_modified_reading_is_bad_signature(cloud: Cloud, world: SimWorld) -> None:
    register(cloud, world)
    tampered = {**signed(world, 1, b"t=21.5"), "payload": base64.b64encode(b"t=99.9").decode()}
    other_key = signed(world, 2, key="not-attested")
    garbage = {**signed(world, 3), "signature": base64.b64encode(b"\x30\x06\x02\x01\x01\x02\x01\x01").decode()}
    result = upload(cloud, tampered, other_key, garbage)
    assert [v["code"] for v in result["verdicts"]] == ["BAD_SIGNATURE"] * 3
    assert result["refused"] == 3 and cloud.counts()["readings"] == 0


def test_unknown_gateway_is_refused(cloud: Cloud, world: SimWorld) -> None:
    result = upload(cloud, signed(world, 1, gateway="ghost"))
    assert [v["code"] for v in result["verdicts"]] == ["UNKNOWN_GATEWAY"]
    assert cloud.counts() == {"gateways": 0, "attestations": 0, "readings": 0, "audit_log": 1}
    error(cloud.client.get("/v1/gateways/ghost"), 404, "GATEWAY_NOT_FOUND")
    error(cloud.client.get("/v1/readings", params={"gateway": "ghost"}), 404, "GATEWAY_NOT_FOUND")


def test_batch_verdicts_keep_order_and_query_filters(cloud: Cloud, world: SimWorld) -> None:
    register(cloud, world)
    register(cloud, world, "gw-2", key="k2")
    batch = [signed(world, i, f"r{i}".encode(), ts=1000 + i) for i in range(5)]
    batch += [signed(world, 0, b"x", ts=2000, gateway="gw-2", key="k2"), signed(world, 0, b"x", gateway="ghost"),
              batch[0]]
    result = upload(cloud, *batch)
    assert [v["index"] for v in result["verdicts"]] == list(range(8))
    assert [v["status"] for v in result["verdicts"]] == ["stored"] * 6 + ["refused", "duplicate"]
    assert (result["stored"], result["duplicates"], result["refused"]) == (6, 1, 1)
    q = cloud.client.get
    assert len(q("/v1/readings").json()["readings"]) == 6
    assert [r["seq"] for r in q("/v1/readings", params={"gateway": "gw-1", "since": 1003}).json()["readings"]] == [3, 4]
    assert [r["gateway"] for r in q("/v1/readings", params={"since": 1500}).json()["readings"]] == ["gw-2"]
    assert len(q("/v1/readings", params={"limit": 2}).json()["readings"]) == 2
    for params in ({"limit": 0}, {"limit": 1001}, {"since": "yesterday"}, {"gateway": "a b"}):
        error(q("/v1/readings", params=params), 422, "INVALID_REQUEST")


def test_readings_page_through_many_with_the_same_timestamp(cloud: Cloud, world: SimWorld) -> None:
    register(cloud, world)
    register(cloud, world, "gw-2", key="k2")
    upload(cloud, *[signed(world, i, f"r{i}".encode(), ts=5000) for i in range(7)],
           signed(world, 0, b"other", ts=5000, gateway="gw-2", key="k2"), signed(world, 7, b"later", ts=5001))
    for params, expected in (({"gateway": "gw-1"}, [("gw-1", i) for i in range(8)]),
                             ({"gateway": "gw-1", "since": 5001}, [("gw-1", 7)]),
                             ({}, [("gw-1", i) for i in range(7)] + [("gw-2", 0), ("gw-1", 7)])):
        seen, after, pages = [], None, 0
        while True:
            page = cloud.client.get("/v1/readings", params={**params, "limit": 3, **({"after": after} if after else {})})
            assert page.status_code == 200, page.text
            seen += [(r["gateway"], r["seq"]) for r in page.json()["readings"]]
            after, pages = page.json()["next"], pages + 1
            if after is None:
                break
        assert seen == expected
        assert pages == len(expected) // 3 + 1
    for bad in ("", "5000", "x:1", "5000:-1", "1:99999999999999999999", "9" * 70):
        error(cloud.client.get("/v1/readings", params={"after": bad}), 422, "INVALID_REQUEST")


# --- malformed requests: 4xx with a code, never 500 -----------------------------------------------------------

def test_malformed_requests(cloud: Cloud, world: SimWorld) -> None:
    post = cloud.client.post
    json_headers = {"content-type": "application/json"}
    error(post("/v1/readings", content=b"{not json", headers=json_headers), 400, "MALFORMED_JSON")
    error(post("/v1/readings", content=b"\xff\xfe\x00", headers=json_headers), 400, "MALFORMED_JSON")
    error(post("/v1/readings", json=[1, 2]), 422, "INVALID_REQUEST")
    error(post("/v1/readings", json={"readings": []}), 422, "INVALID_REQUEST")
    error(post("/v1/readings", json={"readings": [signed(world, 1)] * 201}), 422, "INVALID_REQUEST")
    for change in ({"seq": "1"}, {"seq": -1}, {"seq": 2**63}, {"timestamp": 1.5}, {"payload": "!!"},
                   {"signature": 5}, {"gateway": ""}, {"extra": True}, {"seq": True}):
        message = error(post("/v1/readings", json={"readings": [{**signed(world, 1), **change}]}), 422,
                        "INVALID_REQUEST")
        assert "readings" in message
    error(post("/v1/readings", content=b"x" * (256 * 1024 + 1), headers=json_headers), 413, "REQUEST_TOO_LARGE")
    error(cloud.client.get("/v1/nothing"), 404, "NOT_FOUND")
    error(cloud.client.delete("/v1/gateways"), 405, "METHOD_NOT_ALLOWED")
    error(post("/v1/gateways/gw/revoke", headers={**ADMIN, **json_headers}, content=b"{"), 400, "MALFORMED_JSON")
    assert cloud.counts()["readings"] == 0
    assert cloud.client.get("/healthz").status_code == 200


def test_nul_characters_are_4xx_on_every_backend(cloud: Cloud, world: SimWorld) -> None:
    # PostgreSQL text cannot hold NUL: a name or reason with one must not reach the database as is (was a 500).
    register(cloud, world)
    error(cloud.client.get("/v1/gateways/gw%00-1"), 404, "GATEWAY_NOT_FOUND")
    error(cloud.client.post("/v1/gateways/gw%00-1/revoke", headers=ADMIN), 404, "GATEWAY_NOT_FOUND")
    error(cloud.client.post("/v1/gateways/gw%00-1/revoke"), 401, "UNAUTHORIZED")
    message = error(cloud.client.get("/v1/gateways/" + "%C3%A9" * 3000), 404, "GATEWAY_NOT_FOUND")
    assert len(message) < 500
    r = cloud.client.post("/v1/gateways/gw-1/revoke", headers=ADMIN, json={"reason": "stolen\x00device"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "revoked" and "\x00" not in r.json()["revoked_reason"]
    assert cloud.database.count("audit_log", "WHERE code = 'UNAUTHORIZED'") == 1


def test_oversized_body_is_refused_without_content_length(cloud: Cloud) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(300):
            yield b"x" * 1024

    r = cloud.client.post("/v1/readings", content=chunks(), headers={"content-type": "application/json"})
    error(r, 413, "REQUEST_TOO_LARGE")


# --- a name is bound to its platform; the platform kind comes from the root ---------------------------------------

def test_another_platform_cannot_take_over_a_name(tmp_path: Path, database: Database, world: SimWorld) -> None:  # noqa: F811
    from sgx_iot.verify.policy import TrustRoot

    other = make_world(tmp_path / "platform-b")
    roots = (TrustRoot.from_der(world.root_der, "a"), TrustRoot.from_der(other.root_der, "b"))
    cloud, server = start_cloud(tmp_path / "cloud2", database, world.policy(roots=roots))
    try:
        first = register(cloud, world, "gw-1", key="a")
        assert first["gateway"]["platform_id"] == world.platform.store.config.pck.ppid.hex()
        before = cloud.counts()
        r = cloud.register("gw-1", other.evidence(cloud.challenge(), "b"))
        error(r, 403, "GATEWAY_NAME_TAKEN")
        after = cloud.counts()
        assert (after["gateways"], after["attestations"]) == (before["gateways"], before["attestations"])
        assert after["audit_log"] == before["audit_log"] + 1
        assert cloud.client.get("/v1/gateways/gw-1").json() == first["gateway"]
        forged = upload(cloud, signed(other, 1, gateway="gw-1", key="b"))
        assert forged["verdicts"][0]["code"] == "BAD_SIGNATURE"
        assert register(cloud, world, "gw-1", key="a2")["key_changed"]  # the same platform may re-key
        assert register(cloud, other, "gw-2", key="b")["created"]  # and the other platform takes a free name
    finally:
        cloud.client.close()
        server.stop()


def test_platform_kind_comes_from_the_root_not_the_claim(cloud: Cloud, world: SimWorld) -> None:
    import dataclasses

    evidence = dataclasses.replace(world.evidence(cloud.challenge()), platform="gramine")
    body = cloud.register("gw-1", evidence).json()
    assert body["gateway"]["platform"] == "simulated"
    claims = verify_ear(body["ear"], jwk_public_key(cloud.client.get("/v1/verifier").json()["jwk"]))
    assert claims["submods"][SUBMOD]["sgx-iot.platform"] == "simulated"


def test_corrupted_public_keys_are_4xx(cloud: Cloud, world: SimWorld) -> None:
    import dataclasses

    from cryptography.hazmat.primitives import serialization

    evidence = world.evidence(cloud.challenge())
    der = bytearray(world.key().public_key().public_bytes(serialization.Encoding.DER,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    codes = set()
    for index in range(0, 30):
        corrupted = bytearray(der)
        corrupted[index] ^= 0x01
        pem_text = "-----BEGIN PUBLIC KEY-----\n" + base64.encodebytes(bytes(corrupted)).decode() + \
            "-----END PUBLIC KEY-----\n"
        r = cloud.register("gw-1", dataclasses.replace(evidence, public_key_pem=pem_text))
        assert r.status_code in (403, 422), r.text
        codes.add(r.json()["error"]["code"])
    assert codes <= {"PUBLIC_KEY_INVALID", "KEY_BINDING_MISMATCH", "INVALID_REQUEST"}
    assert cloud.counts()["gateways"] == 0
