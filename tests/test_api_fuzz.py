"""Property-based fuzzing of the cloud's HTTP API.

1. schemathesis (4.x) generates requests from the service's own OpenAPI description — valid ones and, in its
   negative mode, invalid ones — and sends them to a running service over loopback. Checks: never a 5xx, every
   status code and content type is one the description documents, 2xx bodies match their schema, and data the
   schema forbids is refused. (Not used: ``positive_data_acceptance``, because ``evidence`` is documented as a free
   object whose format is checked by the verifier, and ``allow_header_conformance``, because Starlette's 405 lists
   the methods of one route only.)
2. Hypothesis batches of readings for *registered* gateways (which schemathesis rarely reaches): genuine,
   tampered, replayed, from another gateway's key. The service must never answer 5xx, and the database must then
   hold exactly the readings it said it stored.

Examples per operation: ``SGX_IOT_FUZZ_EXAMPLES`` (default 25, bounded for CI; raise it for a longer run).
"""

from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from _cloud_helpers import ADMIN_TOKEN, Cloud, Database, SimWorld, make_world, start_cloud
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sgx_iot.cloud.api import create_app
from sgx_iot.cloud.settings import Settings
from sgx_iot.verify.policy import Policy
from sgx_iot.verify.readings import Reading, SignedReading, sign_reading

EXAMPLES = int(os.environ.get("SGX_IOT_FUZZ_EXAMPLES", "25"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance, negative_data_rejection, ignored_auth, missing_required_header]
GATEWAYS = ("gw-0", "gw-1", "gw-2")

pytestmark = pytest.mark.slow


def _openapi_document() -> dict[str, Any]:
    """The service's OpenAPI description, from an application that never touches its database."""
    with tempfile.TemporaryDirectory() as home:
        app = create_app(Settings(home=Path(home), policy=Policy(mrenclaves=frozenset({bytes(32)}))),
                         run_migrations=False)
        return app.openapi()  # type: ignore[no-any-return]


# A body over the size limit is refused with 413 before it is parsed, whatever it holds.
CONFIG = schemathesis.config.SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {
    "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]}}})
# Loaded at import: schemathesis 4's lazy fixture loader does not work with pytest 9 (it sets Function._nodeid).
schema = schemathesis.openapi.from_dict(_openapi_document(), config=CONFIG)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> SimWorld:
    return make_world(tmp_path_factory.mktemp("platform"))


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory, world: SimWorld) -> Iterator[Cloud]:
    """A running service with three registered gateways."""
    folder = tmp_path_factory.mktemp("cloud")
    c, server = start_cloud(folder / "home", Database(f"sqlite:///{folder / 'cloud.db'}", None), world.policy(),
                            max_body_bytes=512 * 1024)
    for name in GATEWAYS:
        assert c.register(name, world.evidence(c.challenge(), name)).status_code == 201
    yield c
    c.client.close()
    server.stop()


# --- readings for registered gateways -----------------------------------------------------------------------------

@st.composite
def readings(draw: st.DrawFn, world: SimWorld) -> tuple[dict[str, Any], SignedReading | None]:
    """A wire-form reading and, when it is genuine, the signed reading it stands for."""
    gateway = draw(st.sampled_from(GATEWAYS))
    reading = Reading(gateway, draw(st.integers(0, 40)), draw(st.integers(-(2**63), 2**63 - 1)),
                      draw(st.binary(max_size=64)))
    signer = draw(st.sampled_from([gateway, gateway, gateway, *GATEWAYS, "stranger"]))
    sr = SignedReading(reading, sign_reading(reading, world.key(signer)))
    doc = sr.to_dict()
    tamper = draw(st.sampled_from([None, None, "payload", "seq", "timestamp", "signature"]))
    if tamper == "payload":
        doc["payload"] = base64.b64encode(reading.payload + b"!").decode()
    elif tamper == "seq":
        doc["seq"] = reading.seq + 1
    elif tamper == "timestamp":
        doc["timestamp"] = reading.timestamp ^ 1
    elif tamper == "signature":
        sig = bytearray(sr.signature)  # 70 to 72 bytes (ECDSA is randomised): draw a fixed-range index
        sig[draw(st.integers(0, 69))] ^= 1 << draw(st.integers(0, 7))
        doc["signature"] = base64.b64encode(bytes(sig)).decode()
    genuine = tamper is None and signer == gateway
    return doc, sr if genuine else None


def test_random_batches_store_exactly_what_they_acknowledge(cloud: Cloud, world: SimWorld) -> None:
    expected: dict[tuple[str, int], tuple[int, bytes, bytes]] = {}

    @given(st.lists(readings(world), min_size=1, max_size=12))
    @settings(max_examples=EXAMPLES * 2, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(items: list[tuple[dict[str, Any], SignedReading | None]]) -> None:
        response = cloud.client.post("/v1/readings", json={"readings": [doc for doc, _ in items]})
        assert response.status_code == 200, response.text
        for verdict, (doc, genuine) in zip(response.json()["verdicts"], items, strict=True):
            key = (doc["gateway"], doc["seq"])
            if verdict["status"] == "stored":
                assert genuine is not None and key not in expected, (verdict, doc)
                expected[key] = (doc["timestamp"], base64.b64decode(doc["payload"]),
                                 base64.b64decode(doc["signature"]))
            elif verdict["status"] == "duplicate":
                assert key in expected and expected[key][:2] == (doc["timestamp"], base64.b64decode(doc["payload"]))
            else:
                assert verdict["code"] in {"BAD_SIGNATURE", "REPLAYED_READING"}, verdict
                if genuine is not None:  # a genuine reading is refused only when its seq holds another reading
                    assert verdict["code"] == "REPLAYED_READING" and key in expected

    run()
    held: dict[tuple[str, int], tuple[int, bytes, bytes]] = {}
    for name in GATEWAYS:
        rows = cloud.client.get("/v1/readings", params={"gateway": name, "limit": 1000}).json()["readings"]
        for row in rows:
            held[(name, row["seq"])] = (row["timestamp"], base64.b64decode(row["payload"]),
                                        base64.b64decode(row["signature"]))
    assert expected, "no genuine reading was generated: the property was not exercised"
    assert held == expected
    assert cloud.database.count("readings") == len(expected)


# --- the OpenAPI description (runs last: it may revoke any gateway it names) ----------------------------------

@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_api_conforms_to_its_openapi_description_and_never_fails(case: Any, cloud: Cloud) -> None:
    # With the admin token, revocations reach the service's logic (unknown names, reasons) rather than stop at 401.
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if case.path.endswith("/revoke") else None
    case.call_and_validate(base_url=cloud.url, checks=CHECKS, headers=headers)
