"""The enclave as its own process, through EnclaveClient: the round trip, the quote verified by dcap-qvl under the
simulated root, what crosses the boundary (never the private key), malformed/oversized ECALLs, EINIT refusals."""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dcap_qvl
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from _enclave_helpers import SRC, copy_tree, installed_build, sigstruct_for
from sgx_iot.enclave import image
from sgx_iot.enclave.host import EnclaveClient, EnclaveError, SealPolicy
from sgx_iot.enclave.protocol import MAX_FRAME, Op, decode_body, decode_error, encode_body
from sgx_iot.errors import UsageError
from sgx_iot.platform.sim import SimPlatform, build_collateral
from sgx_iot.platform.sim.store import PlatformStore
from sgx_iot.sgx.keybinding import bind_key
from sgx_iot.sgx.sealed import SealedData

NONCE = hashlib.sha256(b"verifier challenge").digest()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("platform")
    PlatformStore.init(folder)
    return folder


@pytest.fixture(scope="module")
def sigstruct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("signed") / "enclave.sigstruct"
    path.write_bytes(sigstruct_for(installed_build()).to_bytes())
    return path


class Transcript:
    """Every frame that crossed the boundary, both directions."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, bytes]] = []

    def __call__(self, direction: str, data: bytes) -> None:
        self.frames.append((direction, bytes(data)))

    def joined(self) -> bytes:
        return b"".join(data for _, data in self.frames)


@pytest.fixture(scope="module")
def transcript() -> Transcript:
    return Transcript()


@pytest.fixture(scope="module")
def client(platform: Path, sigstruct: Path, transcript: Transcript) -> Iterator[EnclaveClient]:
    with EnclaveClient(sigstruct, platform=platform, tap=transcript) as running:
        yield running


def test_launch_identity(client: EnclaveClient) -> None:
    identity = client.identity
    assert identity is not None and client.platform_kind == "simulated"
    assert identity.mrenclave == image.measure(SRC)
    assert identity.mrsigner == sigstruct_for(installed_build()).mrsigner
    assert (identity.isv_prod_id, identity.isv_svn, identity.debug) == (0, 1, False)


def test_round_trip_provision_attest_sign(client: EnclaveClient, platform: Path) -> None:
    provisioned = client.provision()
    SealedData.parse(provisioned.sealed)  # the toolkit's parser accepts the blob
    attestation = client.attest(provisioned.sealed, NONCE)
    assert attestation.public_key == provisioned.public_key
    spki = provisioned.public_key.public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)  # fmt: skip
    assert attestation.report.body.report_data == hashlib.sha256(spki + NONCE).digest() + bytes(32)

    store = PlatformStore.open(platform, create=False)
    collateral = dcap_qvl.QuoteCollateralV3.from_json(build_collateral(store).to_json())
    verified = dcap_qvl.verify_with_root_ca(attestation.quote, collateral, store.pki.root_der(), int(time.time()))
    assert verified.status == "UpToDate"
    enclave = json.loads(verified.to_json())["report"]["SgxEnclave"]
    assert bytes.fromhex(enclave["report_data"]) == bind_key(provisioned.public_key, NONCE)
    assert bytes.fromhex(enclave["mr_enclave"]) == image.measure(SRC)

    messages = [b"temperature=21.5", b"humidity=40", b""]
    signed = client.sign(provisioned.sealed, messages)
    assert signed.public_key == provisioned.public_key
    for message, signature in zip(messages, signed.signatures, strict=True):
        provisioned.public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))


def test_large_batches_are_split_and_keep_order(client: EnclaveClient) -> None:
    provisioned = client.provision(SealPolicy.MRENCLAVE)
    messages = [i.to_bytes(4, "big") for i in range(5000)]  # more than one ECALL (MAX_BATCH = 4096)
    signed = client.sign(provisioned.sealed, messages)
    assert len(signed.signatures) == 5000
    for index in (0, 4095, 4096, 4999):
        signed.public_key.verify(signed.signatures[index], messages[index], ec.ECDSA(hashes.SHA256()))
    assert client.sign(provisioned.sealed, []).signatures == []


def test_private_key_never_crosses_the_boundary(client: EnclaveClient, platform: Path, sigstruct: Path,
                                                transcript: Transcript) -> None:  # fmt: skip
    provisioned = client.provision()
    client.attest(provisioned.sealed, NONCE)
    client.sign(provisioned.sealed, [b"a", b"b"])
    client.public_key(provisioned.sealed)
    # The test plays the enclave: same image, same SIGSTRUCT, same platform, so it can unseal the blob.
    from sgx_iot.sgx.sigstruct import Sigstruct

    runtime = SimPlatform(platform).launch(installed_build().image, Sigstruct.parse(sigstruct.read_bytes()))
    blob = SealedData.parse(provisioned.sealed)
    scalar, _ = blob.unseal(runtime.get_key(blob.key_request))
    private_key = ec.derive_private_key(int.from_bytes(scalar, "little"), ec.SECP256R1())
    assert private_key.public_key() == provisioned.public_key
    traffic = transcript.joined()
    assert len(traffic) > 0 and provisioned.sealed in traffic
    forms = [scalar, scalar[::-1],
             private_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())]  # fmt: skip
    for secret in forms:
        assert secret not in traffic
        assert secret[:16] not in traffic and secret[16:32] not in traffic


def test_malformed_ecall_gets_an_error_and_the_enclave_lives_on(client: EnclaveClient) -> None:
    pid = client.pid
    client.channel.send(b"\x01\x02garbage")
    code, _ = decode_error(decode_body(client.channel.receive()).items)
    assert code == "BAD_FRAME"
    client.channel.send(encode_body(77, []))
    assert decode_error(decode_body(client.channel.receive()).items)[0] == "UNKNOWN_OP"
    assert client.call(Op.IDENTITY, []) and client.pid == pid


def test_oversized_ecall_gets_an_error_and_the_enclave_lives_on(client: EnclaveClient) -> None:
    pid = client.pid
    size = MAX_FRAME + 1
    client.channel.send_raw(struct.pack("<I", size) + bytes(size))
    code, message = decode_error(decode_body(client.channel.receive()).items)
    assert code == "FRAME_TOO_LARGE" and str(size) in message
    assert client.call(Op.IDENTITY, []) and client.pid == pid
    with pytest.raises(UsageError, match="too large"):
        client.call(Op.SIGN, [bytes(MAX_FRAME)])


def test_enclave_errors_arrive_with_their_code(client: EnclaveClient) -> None:
    with pytest.raises(EnclaveError) as info:
        client.sign(b"not a sealed key", [b"x"])
    assert info.value.code == "UNSEAL_CORRUPT"


def test_enclave_file_changed_after_signing_is_refused_by_einit(tmp_path: Path, platform: Path,
                                                                 sigstruct: Path) -> None:  # fmt: skip
    root = copy_tree(tmp_path / "src")
    program = root / "sgx_iot/enclave/program.py"
    program.write_bytes(program.read_bytes().replace(b"MIN_NONCE = 16", b"MIN_NONCE = 1"))
    with pytest.raises(EnclaveError) as info:
        EnclaveClient(sigstruct, platform=platform, source_root=root).start()
    assert info.value.code == "EINIT_MRENCLAVE_MISMATCH"
    assert image.measure(root).hex() in info.value.message and image.measure(SRC).hex() in info.value.message


def test_the_enclave_runs_the_tree_it_was_given(tmp_path: Path, platform: Path) -> None:
    root = copy_tree(tmp_path / "src")
    (root / "sgx_iot/enclave/program.py").write_bytes((root / "sgx_iot/enclave/program.py").read_bytes() + b"\n")
    signed = tmp_path / "copy.sigstruct"
    signed.write_bytes(sigstruct_for(image.build(root)).to_bytes())
    with EnclaveClient(signed, platform=platform, source_root=root) as copy:
        assert copy.identity is not None and copy.identity.mrenclave == image.measure(root)


def test_launch_refusals(tmp_path: Path, platform: Path, sigstruct: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        EnclaveClient(tmp_path / "missing", platform=platform).start()
    short = tmp_path / "short.sigstruct"
    short.write_bytes(sigstruct.read_bytes()[:-1])
    with pytest.raises(UsageError, match="Sigstruct"):
        EnclaveClient(short, platform=platform).start()
    bad = bytearray(sigstruct.read_bytes())
    bad[600] ^= 1  # inside the RSA signature
    tampered = tmp_path / "tampered.sigstruct"
    tampered.write_bytes(bytes(bad))
    with pytest.raises(EnclaveError) as info:
        EnclaveClient(tampered, platform=platform).start()
    assert info.value.code == "EINIT_BAD_SIGSTRUCT"
    with pytest.raises(EnclaveError) as info:
        EnclaveClient(sigstruct, platform=platform, python="/bin/false").start()
    assert info.value.code == "ENCLAVE_EXITED"


def test_program_entry_point_outside_gramine_refuses(tmp_path: Path) -> None:
    """`python3 -m sgx_iot.enclave.program` is the entry inside Gramine; anywhere else it says so and exits."""
    command = [sys.executable, "-P", "-m", "sgx_iot.enclave.program"]
    with pytest.raises(EnclaveError) as info:
        EnclaveClient(tmp_path / "unused", command=command).start()
    assert info.value.code == "GRAMINE_UNAVAILABLE"
