"""Attacks on signed readings and bad input, through the real HTTP API: each refused with its stable code, nothing
stored, never a 5xx.

A batch is answered with one verdict per reading (``stored``, ``duplicate`` or ``refused`` with a code); a request
that is not a well-formed batch is a 4xx with an error code. Content is checked through ``GET /v1/readings`` and
row counts in the database. Threats named after docs/threat-model.md.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from _cloud_helpers import ADMIN_TOKEN, Cloud, Database, SimWorld, make_world, start_cloud
from _threat_helpers import batch, signed
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from sgx_iot.verify.readings import MAX_PAYLOAD, Reading, SignedReading, sign_reading

BODY_LIMIT = 512 * 1024
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> SimWorld:
    return make_world(tmp_path_factory.mktemp("platform"))


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory, world: SimWorld) -> Iterator[Cloud]:
    """One service for the module, with gateways gw-a and gw-b registered (tests use their own seq ranges)."""
    folder = tmp_path_factory.mktemp("cloud")
    c, server = start_cloud(folder / "home", Database(f"sqlite:///{folder / 'cloud.db'}", None), world.policy(),
                            max_body_bytes=BODY_LIMIT, max_batch=100)
    for name in ("gw-a", "gw-b"):
        r = c.register(name, world.evidence(c.challenge(), name))
        assert r.status_code == 201, r.text

    def never_5xx(response: httpx.Response) -> None:
        assert response.status_code < 500, f"{response.request.method} {response.request.url} got a 5xx"

    c.client.event_hooks["response"].append(never_5xx)  # every request of the module, whatever it asserts
    yield c
    c.client.close()
    server.stop()


def post(cloud: Cloud, readings: list[SignedReading] | list[dict[str, Any]]) -> dict[str, Any]:
    body = {"readings": [r.to_dict() if isinstance(r, SignedReading) else r for r in readings]}
    response = cloud.client.post("/v1/readings", json=body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def stored(cloud: Cloud, gateway: str) -> dict[int, dict[str, Any]]:
    """The readings the service holds for ``gateway``, by seq (through the API)."""
    r = cloud.client.get("/v1/readings", params={"gateway": gateway, "limit": 1000})
    assert r.status_code == 200, r.text
    return {row["seq"]: row for row in r.json()["readings"]}


def refused_codes(answer: dict[str, Any]) -> list[str | None]:
    return [v["code"] for v in answer["verdicts"]]


def tamper(sr: SignedReading, **changes: Any) -> dict[str, Any]:
    """The wire form of ``sr`` with fields changed after signing (the signature kept)."""
    doc = sr.to_dict()
    for name, value in changes.items():
        doc[name] = base64.b64encode(value).decode() if name == "payload" else value
    return doc


def assert_nothing_new(cloud: Cloud, before: dict[str, int], refused: int = 0) -> None:
    after = cloud.counts()
    assert after["readings"] == before["readings"]
    assert after["gateways"] == before["gateways"] and after["attestations"] == before["attestations"]
    assert after["audit_log"] == before["audit_log"] + refused


# --- forged and replayed readings ----------------------------------------------------------------------------------

def test_genuine_readings_are_stored_exactly(cloud: Cloud, world: SimWorld) -> None:
    readings = [signed(world.key("gw-a"), "gw-a", seq, b"temp=%d" % seq, 1_700_000_000 + seq) for seq in range(3)]
    answer = post(cloud, readings)
    assert answer["stored"] == 3 and refused_codes(answer) == [None] * 3
    rows = stored(cloud, "gw-a")
    for sr in readings:
        row = rows[sr.reading.seq]
        assert base64.b64decode(row["payload"]) == sr.reading.payload
        assert base64.b64decode(row["signature"]) == sr.signature
        assert row["timestamp"] == sr.reading.timestamp


@pytest.mark.parametrize("change", [
    {"payload": b"temp=99"}, {"payload": b""}, {"timestamp": 1_700_000_001}, {"seq": 101}, {"gateway": "gw-b"},
], ids=["payload", "payload-emptied", "timestamp", "seq", "gateway"])
def test_reading_modified_after_signing_is_refused(cloud: Cloud, world: SimWorld, change: dict[str, Any]) -> None:
    genuine = signed(world.key("gw-a"), "gw-a", 100, b"temp=21")
    before = cloud.counts()
    answer = post(cloud, [tamper(genuine, **change)])
    assert refused_codes(answer) == ["BAD_SIGNATURE"] and answer["stored"] == 0
    assert_nothing_new(cloud, before, refused=1)
    assert 100 not in stored(cloud, "gw-a") and 101 not in stored(cloud, "gw-a")
    assert 100 not in stored(cloud, "gw-b")


def test_reused_sequence_number_is_refused_and_the_first_reading_kept(cloud: Cloud, world: SimWorld) -> None:
    key = world.key("gw-a")
    first = signed(key, "gw-a", 200, b"temp=20")
    assert post(cloud, [first])["stored"] == 1
    before = cloud.counts()
    for other in (signed(key, "gw-a", 200, b"temp=80"), signed(key, "gw-a", 200, b"temp=20", 1_700_000_999)):
        answer = post(cloud, [other])
        assert refused_codes(answer) == ["REPLAYED_READING"]
    assert_nothing_new(cloud, before, refused=2)
    row = stored(cloud, "gw-a")[200]
    assert base64.b64decode(row["payload"]) == b"temp=20" and row["timestamp"] == first.reading.timestamp


def test_replayed_reading_is_acknowledged_but_stored_once(cloud: Cloud, world: SimWorld) -> None:
    reading = signed(world.key("gw-a"), "gw-a", 300, b"temp=30")
    answer = post(cloud, [reading, reading])  # twice in one batch
    assert [v["status"] for v in answer["verdicts"]] == ["stored", "duplicate"]
    before = cloud.counts()
    answer = post(cloud, [reading])  # and again later (an upload retried after a lost acknowledgement)
    assert answer["verdicts"][0]["status"] == "duplicate" and answer["duplicates"] == 1
    assert_nothing_new(cloud, before)
    assert list(stored(cloud, "gw-a")).count(300) == 1


def test_replay_with_a_malleated_signature_is_not_stored_twice(cloud: Cloud, world: SimWorld) -> None:
    """(r, s) and (r, n − s) both verify under ECDSA: a network attacker can re-encode a valid signature, but the
    reading itself is the same and is not stored again."""
    reading = signed(world.key("gw-a"), "gw-a", 400)
    r, s = decode_dss_signature(reading.signature)
    malleated = SignedReading(reading.reading, encode_dss_signature(r, P256_ORDER - s))
    assert post(cloud, [reading])["stored"] == 1
    before = cloud.counts()
    answer = post(cloud, [malleated])
    assert answer["verdicts"][0]["status"] == "duplicate"
    assert_nothing_new(cloud, before)


def test_signature_by_another_registered_gateways_key_is_refused(cloud: Cloud, world: SimWorld) -> None:
    forged = signed(world.key("gw-b"), "gw-a", 500)  # gw-b's enclave key, claiming to be gw-a
    before = cloud.counts()
    answer = post(cloud, [forged])
    assert refused_codes(answer) == ["BAD_SIGNATURE"]
    assert_nothing_new(cloud, before, refused=1)
    assert 500 not in stored(cloud, "gw-a")


def test_reading_from_an_unregistered_key_or_gateway_is_refused(cloud: Cloud, world: SimWorld) -> None:
    before = cloud.counts()
    answer = post(cloud, [signed(world.key("mallory"), "gw-a", 600), signed(world.key("mallory"), "mallory", 0)])
    assert refused_codes(answer) == ["BAD_SIGNATURE", "UNKNOWN_GATEWAY"]
    assert_nothing_new(cloud, before, refused=2)
    missing = cloud.client.get("/v1/readings", params={"gateway": "mallory"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "GATEWAY_NOT_FOUND"


@pytest.mark.parametrize("signature", [
    b"", b"\x30\x00", bytes(64), b"\x30\x44" + bytes(70), b"\xff" * 72,
], ids=["empty", "empty-sequence", "raw-zeros", "zero-der", "garbage"])
def test_garbage_signatures_are_refused(cloud: Cloud, world: SimWorld, signature: bytes) -> None:
    reading = Reading("gw-a", 700, 1_700_000_000, b"x")
    before = cloud.counts()
    answer = post(cloud, [SignedReading(reading, signature)])
    assert refused_codes(answer) == ["BAD_SIGNATURE"]
    assert_nothing_new(cloud, before, refused=1)


def test_mixed_batch_gets_one_verdict_per_reading_in_order(cloud: Cloud, world: SimWorld) -> None:
    a, b = world.key("gw-a"), world.key("gw-b")
    good1, good2 = signed(a, "gw-a", 800), signed(b, "gw-b", 800)
    batch_ = [good1, tamper(signed(a, "gw-a", 801), payload=b"forged"), signed(b, "gw-a", 802),
              signed(a, "nobody", 1), good2, good1]
    before = cloud.counts()
    answer = post(cloud, batch_)
    assert [v["index"] for v in answer["verdicts"]] == list(range(6))
    assert [v["status"] for v in answer["verdicts"]] == ["stored", "refused", "refused", "refused", "stored",
                                                        "duplicate"]
    assert refused_codes(answer) == [None, "BAD_SIGNATURE", "BAD_SIGNATURE", "UNKNOWN_GATEWAY", None, None]
    assert (answer["stored"], answer["duplicates"], answer["refused"]) == (2, 1, 3)
    after = cloud.counts()
    assert after["readings"] == before["readings"] + 2 and after["audit_log"] == before["audit_log"] + 3
    assert 801 not in stored(cloud, "gw-a") and 802 not in stored(cloud, "gw-a")


def test_large_mixed_batch_verified_in_parallel_keeps_every_verdict(cloud: Cloud, world: SimWorld) -> None:
    """Batches of 16 or more are verified on a thread pool: the verdicts must still be per reading, in order."""
    a, b = world.key("gw-a"), world.key("gw-b")
    readings: list[Any] = []
    expected: list[tuple[str, str | None]] = []
    for i in range(42):
        seq = 7000 + i
        kind = i % 6
        reading, outcome = {
            0: (lambda: signed(a, "gw-a", seq), ("stored", None)),
            1: (lambda: tamper(signed(a, "gw-a", seq), payload=b"forged"), ("refused", "BAD_SIGNATURE")),
            2: (lambda: signed(b, "gw-a", seq), ("refused", "BAD_SIGNATURE")),  # another gateway's key
            3: (lambda: signed(a, "nobody", seq), ("refused", "UNKNOWN_GATEWAY")),
            4: (lambda: signed(b, "gw-b", seq), ("stored", None)),
            # the reading stored at kind 0 of this round, sent again: acknowledged, not stored twice
            5: (lambda: signed(a, "gw-a", seq - 5), ("duplicate", None)),
        }[kind]
        readings.append(reading())
        expected.append(outcome)
    replay = Reading("gw-a", 7000, 1, b"another reading, same seq")
    readings.append(SignedReading(replay, sign_reading(replay, a)))
    expected.append(("refused", "REPLAYED_READING"))
    before = cloud.counts()
    answer = post(cloud, readings)
    assert [v["index"] for v in answer["verdicts"]] == list(range(len(readings)))
    assert [(v["status"], v.get("code")) for v in answer["verdicts"]] == expected
    stored_now = sum(1 for status, _ in expected if status == "stored")
    assert cloud.counts()["readings"] == before["readings"] + stored_now


def test_readings_signed_with_a_replaced_key_are_refused(cloud: Cloud, world: SimWorld) -> None:
    """After a gateway is re-provisioned and attests its new key, signatures by the old key (say, a sealed blob
    stolen earlier and unsealed on a compromised enclave) no longer verify."""
    old = signed(world.key("gw-c"), "gw-c", 0)
    assert cloud.register("gw-c", world.evidence(cloud.challenge(), "gw-c")).status_code == 201
    assert post(cloud, [old])["stored"] == 1
    rekey = cloud.register("gw-c", world.evidence(cloud.challenge(), "gw-c-new-key"))
    assert rekey.status_code == 201 and rekey.json()["key_changed"] is True
    before = cloud.counts()
    answer = post(cloud, [signed(world.key("gw-c"), "gw-c", 1), signed(world.key("gw-c-new-key"), "gw-c", 2)])
    assert refused_codes(answer) == ["BAD_SIGNATURE", None]
    assert cloud.counts()["readings"] == before["readings"] + 1
    rows = stored(cloud, "gw-c")
    assert sorted(rows) == [0, 2] and rows[0]["key_sha256"] != rows[2]["key_sha256"]  # each under its own key


def test_readings_of_a_revoked_gateway_are_refused(cloud: Cloud, world: SimWorld) -> None:
    key = world.key("gw-r")
    assert cloud.register("gw-r", world.evidence(cloud.challenge(), "gw-r")).status_code == 201
    assert post(cloud, [signed(key, "gw-r", 0)])["stored"] == 1
    denied = cloud.client.post("/v1/gateways/gw-r/revoke", json={"reason": "x"})
    assert denied.status_code == 401 and denied.json()["error"]["code"] == "UNAUTHORIZED"
    r = cloud.client.post("/v1/gateways/gw-r/revoke", json={"reason": "compromised"},
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    before = cloud.counts()
    answer = post(cloud, [signed(key, "gw-r", 1), signed(key, "gw-r", 0)])
    assert refused_codes(answer) == ["GATEWAY_REVOKED", "GATEWAY_REVOKED"]
    assert cloud.counts()["readings"] == before["readings"]
    assert sorted(stored(cloud, "gw-r")) == [0]  # what was accepted before the revocation is kept


# --- oversized and malformed requests ---------------------------------------------------------------------------

def _error(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def test_oversized_body_is_refused_before_parsing(cloud: Cloud) -> None:
    big = b"{\"readings\": [" + b" " * BODY_LIMIT + b"]}"
    before = cloud.counts()
    assert _error(cloud.client.post("/v1/readings", content=big,
                                    headers={"content-type": "application/json"})) == (413, "REQUEST_TOO_LARGE")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds for a streamed body too
        yield b'{"readings": ['
        for _ in range(BODY_LIMIT // 8192 + 1):
            yield b" " * 8192

    assert _error(cloud.client.post("/v1/readings", content=chunks(),
                                    headers={"content-type": "application/json"})) == (413, "REQUEST_TOO_LARGE")
    assert _error(cloud.client.post("/v1/gateways", content=big,
                                    headers={"content-type": "application/json"})) == (413, "REQUEST_TOO_LARGE")
    assert cloud.counts() == before


@pytest.mark.parametrize("head", [
    b"POST /v1/readings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: nonsense\r\n\r\n{}",
    b"POST /v1/readings HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n{}",
    b"POST /v1/readings HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    b"GARBAGE\r\n\r\n",
], ids=["non-numeric-length", "huge-length", "two-lengths", "not-http"])
def test_broken_http_framing_is_a_4xx(cloud: Cloud, head: bytes) -> None:
    """Requests no client library would send, written on a raw socket."""
    from urllib.parse import urlsplit

    url = urlsplit(cloud.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as conn:
        conn.sendall(head)
        answer = conn.recv(4096)
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 500, answer[:200]


def test_too_many_readings_or_too_large_fields_are_refused(cloud: Cloud, world: SimWorld) -> None:
    key = world.key("gw-a")
    before = cloud.counts()
    too_many = [signed(key, "gw-a", 900 + i, b"") for i in range(101)]  # the module's service allows 100
    assert _error(cloud.client.post("/v1/readings", json=batch(too_many))) == (422, "INVALID_REQUEST")
    huge = Reading("gw-a", 950, 0, bytes(MAX_PAYLOAD))
    doc = SignedReading(huge, sign_reading(huge, key)).to_dict()
    doc["payload"] = base64.b64encode(bytes(MAX_PAYLOAD + 3)).decode()
    assert _error(cloud.client.post("/v1/readings", json={"readings": [doc]})) == (422, "INVALID_REQUEST")
    doc["payload"], doc["signature"] = "", base64.b64encode(bytes(100)).decode()
    assert _error(cloud.client.post("/v1/readings", json={"readings": [doc]})) == (422, "INVALID_REQUEST")
    assert cloud.counts() == before
    assert 900 not in stored(cloud, "gw-a")


def _good(world: SimWorld) -> dict[str, Any]:
    return signed(world.key("gw-a"), "gw-a", 990).to_dict()


MALFORMED: list[tuple[str, Any, int, str]] = [
    ("not-json", b"{readings: [", 400, "MALFORMED_JSON"),
    ("invalid-utf8", b'{"readings": [{"gateway": "\xff\xfe"}]}', 400, "MALFORMED_JSON"),
    ("deeply-nested", b'{"readings":' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400, "MALFORMED_JSON"),
    ("huge-integer", b'{"readings":[{"gateway":"gw-a","seq":' + b"9" * 5000 + b"}]}", 400, "MALFORMED_JSON"),
    ("empty-body", b"", 422, "INVALID_REQUEST"),
    ("null", b"null", 422, "INVALID_REQUEST"),
    ("array", b"[]", 422, "INVALID_REQUEST"),
    ("empty-batch", b'{"readings": []}', 422, "INVALID_REQUEST"),
    ("readings-not-a-list", b'{"readings": {}}', 422, "INVALID_REQUEST"),
    ("extra-top-level-field", lambda g: {"readings": [g], "admin": True}, 422, "INVALID_REQUEST"),
    ("extra-reading-field", lambda g: {"readings": [{**g, "key": "x"}]}, 422, "INVALID_REQUEST"),
    ("missing-signature", lambda g: {"readings": [{k: v for k, v in g.items() if k != "signature"}]}, 422,
     "INVALID_REQUEST"),
    ("seq-as-string", lambda g: {"readings": [{**g, "seq": "990"}]}, 422, "INVALID_REQUEST"),
    ("seq-as-float", lambda g: {"readings": [{**g, "seq": 990.0}]}, 422, "INVALID_REQUEST"),
    ("seq-as-bool", lambda g: {"readings": [{**g, "seq": True}]}, 422, "INVALID_REQUEST"),
    ("seq-negative", lambda g: {"readings": [{**g, "seq": -1}]}, 422, "INVALID_REQUEST"),
    ("seq-too-large", lambda g: {"readings": [{**g, "seq": 2**63}]}, 422, "INVALID_REQUEST"),
    ("timestamp-too-large", lambda g: {"readings": [{**g, "timestamp": 2**63}]}, 422, "INVALID_REQUEST"),
    ("timestamp-nan", b'{"readings":[{"gateway":"gw-a","seq":1,"timestamp":NaN,"payload":"","signature":""}]}', 422,
     "INVALID_REQUEST"),
    ("payload-not-base64", lambda g: {"readings": [{**g, "payload": "!!not base64!!"}]}, 422, "INVALID_REQUEST"),
    ("payload-urlsafe-base64", lambda g: {"readings": [{**g, "payload": "-_-_"}]}, 422, "INVALID_REQUEST"),
    ("payload-as-list", lambda g: {"readings": [{**g, "payload": [1, 2]}]}, 422, "INVALID_REQUEST"),
    ("gateway-unicode", lambda g: {"readings": [{**g, "gateway": "gw-\u00e9"}]}, 422, "INVALID_REQUEST"),
    ("gateway-nul", lambda g: {"readings": [{**g, "gateway": "gw\u0000a"}]}, 422, "INVALID_REQUEST"),
    ("gateway-lone-surrogate", b'{"readings":[{"gateway":"\\ud800","seq":1,"timestamp":1,"payload":"",'
                               b'"signature":""}]}', 422, "INVALID_REQUEST"),
    ("gateway-too-long", lambda g: {"readings": [{**g, "gateway": "g" * 65}]}, 422, "INVALID_REQUEST"),
    ("gateway-null", lambda g: {"readings": [{**g, "gateway": None}]}, 422, "INVALID_REQUEST"),
]


@pytest.mark.parametrize(("body", "status", "code"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_reading_requests_are_4xx_with_a_code(cloud: Cloud, world: SimWorld, body: Any, status: int,
                                                        code: str) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body(_good(world))).encode()
    before = cloud.counts()
    response = cloud.client.post("/v1/readings", content=content, headers={"content-type": "application/json"})
    assert _error(response) == (status, code), response.text
    assert response.json()["error"]["message"]
    assert cloud.counts() == before


@pytest.mark.parametrize(("content_type", "body"), [
    ("text/plain", b"temp=21"), ("application/x-www-form-urlencoded", b"readings=1"), ("", b"{}"),
    ("application/json", b'{"name": "gw-x"}'), ("application/json", b'{"name": "../etc", "evidence": {}}'),
    ("application/json", b'{"name": "gw-x", "evidence": []}'),
    ("application/json", b'{"name": "gw-x", "evidence": {"format": "sgx-iot-evidence/1"}}'),
])
def test_malformed_registrations_are_4xx_with_a_code(cloud: Cloud, content_type: str, body: bytes) -> None:
    before = cloud.counts()
    response = cloud.client.post("/v1/gateways", content=body, headers={"content-type": content_type})
    assert 400 <= response.status_code < 500 and response.json()["error"]["code"], response.text
    assert cloud.counts() == before


def test_oversized_evidence_is_refused(cloud: Cloud, world: SimWorld) -> None:
    evidence = world.evidence(cloud.challenge(), "gw-big").to_dict()
    evidence["enclave"] = {"mrenclave": "00" * 150_000}  # under the body limit, over the evidence limit
    before = cloud.counts()
    assert _error(cloud.client.post("/v1/gateways", json={"name": "gw-big", "evidence": evidence})) == (
        422, "INVALID_REQUEST")
    assert cloud.counts() == before


@pytest.mark.parametrize(("method", "path", "params", "status"), [
    ("GET", "/v1/readings", {"limit": "lots"}, 422),
    ("GET", "/v1/readings", {"limit": 0}, 422),
    ("GET", "/v1/readings", {"since": "9" * 40}, 422),
    ("GET", "/v1/readings", {"gateway": "../../etc/passwd"}, 422),
    ("GET", "/v1/gateways/" + "g" * 5000, {}, 404),
    ("GET", "/v1/gateways/%00", {}, 404),
    ("GET", "/v1/gateways/%ff%fe", {}, 404),
    ("DELETE", "/v1/readings", {}, 405),
    ("PUT", "/v1/gateways/gw-a", {}, 405),
    ("GET", "/v1/admin", {}, 404),
    ("POST", "/v1/gateways/gw-a/revoke", {}, 401),
])
def test_bad_paths_methods_and_parameters_are_4xx_with_a_code(cloud: Cloud, method: str, path: str,
                                                              params: dict[str, Any], status: int) -> None:
    before = cloud.counts()
    response = cloud.client.request(method, path, params=params)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"]
    after = cloud.counts()
    assert {k: after[k] for k in ("gateways", "attestations", "readings")} == {
        k: before[k] for k in ("gateways", "attestations", "readings")}
    assert cloud.client.get("/v1/gateways/gw-a").json()["status"] == "active"


def test_what_the_api_reports_is_what_the_database_holds(cloud: Cloud) -> None:
    """A second, independent connection to the database sees exactly the readings the API lists."""
    names = [g["name"] for g in cloud.client.get("/v1/gateways").json()]
    assert cloud.database.count("readings") == sum(len(stored(cloud, name)) for name in names)
    assert cloud.client.get("/healthz").json()["status"] == "ok"
