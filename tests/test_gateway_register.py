"""`gateway register` and `gateway status`, through a real cloud on loopback and the real enclave process."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from _e2e_helpers import E2E, CloudServer, e2e, e2e_world  # noqa: F401  (fixtures)
from sgx_iot.errors import FormatError, UsageError
from sgx_iot.gateway.cloud_client import CloudClient, CloudRefusal, CloudUnavailable, RetryPolicy
from sgx_iot.gateway.registration import (
    REGISTRATION_FILE,
    Registration,
    key_fingerprint,
    load_registration,
    register,
    require_registration,
)
from sgx_iot.gateway.state import GatewayState
from sgx_iot.gateway.status import gateway_status
from sgx_iot.verify.evidence import Evidence


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_register_stores_the_registration_and_the_cloud_has_the_enclave_key(e2e: E2E) -> None:
    state = e2e.gateway("gw-reg", registered=False)
    registration = e2e.register(state, "gw-reg")
    assert registration == load_registration(state)
    assert registration.name == "gw-reg"
    assert registration.cloud == e2e.cloud.url
    assert registration.key_sha256 == key_fingerprint(state.public_key())
    assert registration.enclave["mrenclave"] == e2e.world.mrenclave.hex()
    info = e2e.cloud.service.get_gateway("gw-reg")
    assert info.key_sha256 == registration.key_sha256 and info.status == "active"
    # The EAR token verifies with the verifier's public key (GET /v1/verifier) and names this gateway's key.
    verifier = httpx.get(f"{e2e.cloud.url}/v1/verifier").json()
    key = serialization.load_pem_public_key(verifier["public_key"].encode())
    claims = jwt.decode(registration.ear, key, algorithms=["ES256"],  # type: ignore[arg-type]
                        options={"verify_aud": False})
    assert claims["exp"] == registration.ear_expires_at
    assert (state.folder / REGISTRATION_FILE).stat().st_mode & 0o077 == 0


def test_register_again_keeps_the_key(e2e: E2E) -> None:
    state = e2e.gateway("gw-again")
    first = require_registration(state)
    second = e2e.register(state, "gw-again")
    assert second.key_sha256 == first.key_sha256
    assert len(e2e.cloud.service.list_gateways()) == 1


def test_refused_evidence_stores_nothing(e2e: E2E, tmp_path: Path) -> None:
    """A cloud whose reference values do not list this enclave refuses it: exit 1 with the code, no file."""
    strict = CloudServer(tmp_path / "strict", e2e.world.policy(mrenclaves=frozenset({b"\x11" * 32})),
                         e2e.world.collateral()).start()
    try:
        state = e2e.gateway("gw-refused", registered=False)
        with pytest.raises(CloudRefusal) as info:
            register(state, strict.url, "gw-refused")
        assert info.value.code == "MRENCLAVE_NOT_ALLOWED" and info.value.status == 403
        assert load_registration(state) is None
        result = e2e.cli(state, "gateway", "register", "--cloud", strict.url, "--name", "gw-refused")
        assert result.returncode == 1, result.stderr
        assert b"MRENCLAVE_NOT_ALLOWED" in result.stderr
        assert load_registration(state) is None
        assert strict.service.list_gateways() == []
    finally:
        strict.stop()


def test_cli_register_and_status(e2e: E2E) -> None:
    state = e2e.gateway("gw-cli", registered=False)
    result = e2e.cli(state, "gateway", "register", "--cloud", e2e.cloud.url + "/", "--name", "gw-cli", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["name"] == "gw-cli" and doc["cloud"] == e2e.cloud.url
    assert doc["key_sha256"] == key_fingerprint(state.public_key())
    status = e2e.cli(state, "gateway", "status", "--json")
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["registration"]["name"] == "gw-cli"
    assert "ear" not in info["registration"]  # the token is not printed by status
    assert info["key_matches_registration"] is True
    assert (info["outbox"]["pending"], info["outbox"]["next_seq"]) == (0, 0)  # registering creates the outbox
    text = e2e.cli(state, "gateway", "status")
    assert text.returncode == 0 and b"gw-cli" in text.stdout and b"not registered" not in text.stdout


def test_register_with_an_unreachable_cloud_exits_2(e2e: E2E) -> None:
    state = e2e.gateway("gw-offline", registered=False)
    result = e2e.cli(state, "gateway", "register", "--cloud", f"http://127.0.0.1:{_free_port()}", "--name", "gw-x",
                     "--attempts", "2")
    assert result.returncode == 2
    assert b"CLOUD_UNREACHABLE" in result.stderr
    assert load_registration(state) is None


@pytest.mark.parametrize("args, message", [
    (["--cloud", "ftp://example.org", "--name", "gw"], b"not a cloud URL"),
    (["--cloud", "http://127.0.0.1:1", "--name", "bad name!"], b"gateway"),
])
def test_register_usage_errors(e2e: E2E, args: list[str], message: bytes) -> None:
    state = e2e.gateway("gw-usage", registered=False)
    result = e2e.cli(state, "gateway", "register", *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_send_before_register_says_what_to_do(e2e: E2E, tmp_path: Path) -> None:
    state = e2e.gateway("gw-unregistered", registered=False)
    (tmp_path / "r").write_bytes(b"1")
    result = e2e.cli(state, "gateway", "send", str(tmp_path / "r"))
    assert result.returncode == 2
    assert b"gateway register" in result.stderr


def test_status_of_an_empty_folder(tmp_path: Path) -> None:
    info = gateway_status(GatewayState(tmp_path / "nothing"))
    assert (info.provisioned, info.registration, info.outbox, info.key_sha256) == (False, None, None, None)


def test_a_new_key_must_be_registered_before_sending(e2e: E2E, tmp_path: Path) -> None:
    """Re-provisioned since registration: nothing is signed with the unregistered key; register again, then deliver."""
    state = e2e.gateway("gw-rekey")
    from sgx_iot.gateway.provisioning import init_gateway

    init_gateway(state, sigstruct=e2e.world.sigstruct, platform=e2e.world.platform, force=True)
    (tmp_path / "r").write_bytes(b"after re-key")
    result = e2e.cli(state, "gateway", "send", str(tmp_path / "r"))
    assert result.returncode == 2
    assert b"register" in result.stderr
    assert gateway_status(state).key_matches_registration is False
    assert gateway_status(state).outbox.unsigned == 1  # type: ignore[union-attr]
    e2e.register(state, "gw-rekey")
    result = e2e.cli(state, "gateway", "send", "--stdin", input=b"")
    assert result.returncode == 0, result.stderr
    assert [r.payload for r in e2e.cloud.readings("gw-rekey")] == [b"after re-key"]


def test_registration_file_is_parsed_strictly(tmp_path: Path) -> None:
    good = Registration("gw", "http://127.0.0.1:1", "ab" * 32, "t.o.k", 1, None, "sha256:x", "UpToDate", {})
    assert Registration.from_json(good.to_json()) == good
    doc = json.loads(good.to_json())
    for change, field_name in [({"extra": 1}, "extra"), ({"name": "no way"}, "gateway"),
                               ({"registered_at": "1"}, "registered_at"), ({"format": "x"}, "format")]:
        with pytest.raises(FormatError) as info:
            Registration.from_json(json.dumps({**doc, **change}))
        assert info.value.field == field_name
    with pytest.raises(FormatError):
        Registration.from_json(b"\xff")
    state = GatewayState(tmp_path)
    (tmp_path / REGISTRATION_FILE).write_text("{}")
    with pytest.raises(FormatError):
        load_registration(state)
    (tmp_path / REGISTRATION_FILE).unlink()
    with pytest.raises(UsageError):
        require_registration(state)


def test_client_maps_refusals_and_outages(e2e: E2E) -> None:
    with CloudClient(e2e.cloud.url) as client:
        challenge = client.challenge()
        assert len(challenge.nonce) == 32
        bogus = Evidence("simulated", b"\0" * 64, "-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----\n",
                         challenge.nonce)
        with pytest.raises(CloudRefusal) as info:
            client.register("gw", bogus)
        assert info.value.status in (403, 422) and info.value.code.isupper()
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.02)
    with CloudClient(f"http://127.0.0.1:{_free_port()}", retry=policy, sleep=sleeps.append) as client:
        with pytest.raises(CloudUnavailable) as outage:
            client.challenge()
        assert outage.value.code == "CLOUD_UNREACHABLE" and "4 attempts" in str(outage.value)
        assert len(sleeps) == 3 and all(0 <= s <= 0.02 for s in sleeps)
        sleeps.clear()
        with pytest.raises(CloudUnavailable):
            client.register("gw", bogus)
        assert len(sleeps) == 3  # a refused connection is retried even for a registration
    for bad in ["", "127.0.0.1:8000", "http://", "http://h/?q=1", "file:///x"]:
        with pytest.raises(UsageError):
            CloudClient(bad)


def test_next_seq_in_a_gateway_document_is_checked() -> None:
    """The cloud's next_seq decides the gateway's numbering: only a sequence number is taken (0 when absent, from
    a cloud too old to send it)."""
    from sgx_iot.errors import FormatError
    from sgx_iot.gateway.cloud_client import _next_seq

    assert [_next_seq({"next_seq": n}) for n in (0, 5, 2**63)] == [0, 5, 2**63]
    assert _next_seq({}) == 0
    for bad in (-1, True, "3", 2**63 + 1, 1.5, None):
        with pytest.raises(FormatError, match="next_seq"):
            _next_seq({"next_seq": bad})
