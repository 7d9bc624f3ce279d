"""Property-based fuzzing of the ECALL protocol against the running enclave (a compromised gateway OS controls
every byte it sends): random bodies, well-formed requests with random items, and mutations of valid requests that
carry the real sealed key. The enclave must answer every request — OK, or an error with one of its documented codes
(never INTERNAL, which would be an unexpected exception) — stay alive in the same process, and never let the
private key cross the boundary in any form.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _threat_helpers import real_sigstruct
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgx_iot.enclave.host import EnclaveClient, SealPolicy
from sgx_iot.enclave.protocol import STATUS_ERROR, STATUS_OK, ErrorCode, Op, decode_body, decode_error, encode_body
from sgx_iot.platform.sim.store import PlatformStore

pytestmark = pytest.mark.slow

NONCE = bytes(range(32))
DOCUMENTED = {code.value for code in ErrorCode} - {ErrorCode.INTERNAL.value}


class Transcript:
    """Every frame that crossed the boundary, both directions."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def __call__(self, direction: str, data: bytes) -> None:
        self.frames.append(bytes(data))


@pytest.fixture(scope="module")
def transcript() -> Transcript:
    return Transcript()


@pytest.fixture(scope="module")
def enclave(tmp_path_factory: pytest.TempPathFactory, transcript: Transcript) -> Iterator[tuple[EnclaveClient, Path]]:
    folder = tmp_path_factory.mktemp("ecall")
    platform = folder / "platform"
    PlatformStore.init(platform)
    sigstruct = folder / "enclave.sigstruct"
    sigstruct.write_bytes(real_sigstruct())
    with EnclaveClient(sigstruct, platform=platform, tap=transcript) as client:
        yield client, folder


@pytest.fixture(scope="module")
def sealed(enclave: tuple[EnclaveClient, Path]) -> bytes:
    return enclave[0].provision(SealPolicy.MRSIGNER).sealed


def ecall(client: EnclaveClient, body: bytes) -> tuple[int, list[bytes]]:
    """Send a raw request body; the enclave's answer (status, items)."""
    pid = client.pid
    client.channel.send(body)
    answer = decode_body(client.channel.receive(), "EcallResponse")
    assert client.pid == pid  # answered by the same process: it did not die (a crash closes the channel)
    assert answer.kind in (STATUS_OK, STATUS_ERROR), answer
    if answer.kind == STATUS_ERROR:
        code, message = decode_error(answer.items)
        assert code in DOCUMENTED, f"{code}: {message}"
    return answer.kind, answer.items


def valid_requests(sealed: bytes) -> list[bytes]:
    return [
        encode_body(Op.IDENTITY, []),
        encode_body(Op.PUBLIC_KEY, [sealed]),
        encode_body(Op.SIGN, [sealed, b"reading one", b"reading two"]),
        encode_body(Op.SIGN_DIGESTS, [sealed, bytes(32)]),
        encode_body(Op.PROVISION, [b"\x01"]),
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(body=st.binary(max_size=300))
def test_random_bodies_are_answered(enclave: tuple[EnclaveClient, Path], body: bytes) -> None:
    ecall(enclave[0], body)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(op=st.one_of(st.sampled_from(list(Op)), st.integers(0, 255)),
       items=st.lists(st.binary(max_size=700), max_size=6))
def test_well_formed_requests_with_random_items_are_answered(enclave: tuple[EnclaveClient, Path], op: int,
                                                             items: list[bytes]) -> None:
    ecall(enclave[0], encode_body(op, items))


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(data=st.data())
def test_mutated_valid_requests_are_answered(enclave: tuple[EnclaveClient, Path], sealed: bytes,
                                             data: st.DataObject) -> None:
    body = bytearray(data.draw(st.sampled_from(valid_requests(sealed))))
    for _ in range(data.draw(st.integers(1, 4))):
        how = data.draw(st.sampled_from(["flip", "truncate", "extend", "splice"]))
        if how == "flip" and body:
            body[data.draw(st.integers(0, len(body) - 1))] ^= 1 << data.draw(st.integers(0, 7))
        elif how == "truncate":
            del body[data.draw(st.integers(0, len(body))):]
        elif how == "extend":
            body += data.draw(st.binary(min_size=1, max_size=64))
        elif body:
            at = data.draw(st.integers(0, len(body)))
            body[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    ecall(enclave[0], bytes(body))


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(data=st.data())
def test_a_tampered_sealed_key_is_never_used(enclave: tuple[EnclaveClient, Path], sealed: bytes,
                                             data: st.DataObject) -> None:
    blob = bytearray(sealed)
    blob[data.draw(st.integers(0, len(blob) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    status, items = ecall(enclave[0], encode_body(Op.SIGN, [bytes(blob), b"forged"]))
    assert status == STATUS_ERROR and decode_error(items)[0].startswith(("UNSEAL_", "BAD_ARGUMENT"))


def test_the_private_key_never_crossed_the_boundary(enclave: tuple[EnclaveClient, Path], sealed: bytes,
                                                    transcript: Transcript) -> None:
    """Runs after the fuzzing above (same module-scoped enclave and transcript): the test plays the enclave to
    unseal the key, then looks for it in everything that crossed the boundary."""
    from sgx_iot.enclave.image import build_image, installed_source_root
    from sgx_iot.platform.sim import SimPlatform
    from sgx_iot.sgx.sealed import SealedData
    from sgx_iot.sgx.sigstruct import Sigstruct

    client, folder = enclave
    client.attest(sealed, NONCE)
    runtime = SimPlatform(folder / "platform").launch(build_image(installed_source_root()),
                                                      Sigstruct.parse((folder / "enclave.sigstruct").read_bytes()))
    blob = SealedData.parse(sealed)
    scalar, _ = blob.unseal(runtime.get_key(blob.key_request))
    assert ec.derive_private_key(int.from_bytes(scalar, "little"), ec.SECP256R1()).public_key() == \
        client.public_key(sealed)
    traffic = b"".join(transcript.frames)
    assert len(transcript.frames) > 500 and sealed in traffic
    for form in (scalar, scalar[::-1], scalar.hex().encode(), scalar[::-1].hex().encode()):
        assert form not in traffic and form[:16] not in traffic
