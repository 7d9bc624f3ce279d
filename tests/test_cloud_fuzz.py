"""Property-based fuzzing of the HTTP API from its own OpenAPI description (schemathesis), against the real
service on loopback: whatever the input, the answer is never a 5xx and every error has the one JSON shape."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from _cloud_helpers import Database, make_world, start_cloud
from hypothesis import HealthCheck, given, settings


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[schemathesis.BaseSchema]:
    tmp = tmp_path_factory.mktemp("fuzz")
    world = make_world(tmp / "platform")
    cloud, server = start_cloud(tmp / "cloud", Database(f"sqlite:///{tmp / 'cloud.db'}", None), world.policy(),
                                max_body_bytes=64 * 1024)
    # Something to find: a registered gateway with a reading.
    from sgx_iot.verify.readings import Reading, SignedReading, sign_reading

    assert cloud.register("gw-1", world.evidence(cloud.challenge())).status_code == 201
    reading = Reading("gw-1", 1, 1, b"x")
    cloud.client.post("/v1/readings", json={"readings": [SignedReading(reading, sign_reading(reading, world.key()))
                                                          .to_dict()]})
    try:
        yield schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    finally:
        cloud.client.close()
        server.stop()


OPERATIONS = ["POST /v1/challenges", "POST /v1/gateways", "GET /v1/gateways", "GET /v1/gateways/{name}",
              "POST /v1/gateways/{name}/revoke", "POST /v1/readings", "GET /v1/readings", "GET /healthz",
              "GET /v1/verifier"]


@pytest.mark.parametrize("label", OPERATIONS)
def test_api_never_fails_with_a_server_error(api_schema: schemathesis.BaseSchema, label: str) -> None:
    operations = {op.label: op for op in (r.ok() for r in api_schema.get_all_operations())}
    assert set(OPERATIONS) <= set(operations)
    operation = operations[label]

    @given(case=operation.as_strategy())
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: schemathesis.Case) -> None:
        response = case.call(timeout=30)
        assert response.status_code < 500, (label, response.status_code, response.text[:500])
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
            code = body["error"]["code"]
            assert code.replace("_", "").isalnum() and code.isupper(), code
        # Fuzzed evidence never registers a gateway.
        if label == "POST /v1/gateways":
            assert response.status_code != 201

    check()
