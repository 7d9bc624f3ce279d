"""The trusted program's ECALLs, run in-process on a simulated runtime: sealing as sgx_seal_data does, attestation
binding, batch signing, and every refusal with its own code (the enclave keeps serving afterwards)."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from _enclave_helpers import copy_tree, ecall, ecall_error, installed_build, launch_program
from sgx_iot.enclave import image
from sgx_iot.enclave.program import EnclaveProgram
from sgx_iot.enclave.protocol import STATUS_OK, Op, decode_body, decode_error
from sgx_iot.sgx.keybinding import bind_key
from sgx_iot.sgx.report import Report
from sgx_iot.sgx.sealed import SealedData

MRSIGNER = (2).to_bytes(2, "little")
MRENCLAVE = (1).to_bytes(2, "little")
NONCE = bytes(range(32))


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("platform")


@pytest.fixture(scope="module")
def program(platform: Path) -> EnclaveProgram:
    return launch_program(platform)


@pytest.fixture(scope="module")
def sealed(program: EnclaveProgram) -> bytes:
    reply = ecall(program, Op.PROVISION, MRSIGNER)
    assert reply.kind == STATUS_OK
    return reply.items[0]


def public_key(spki: bytes) -> ec.EllipticCurvePublicKey:
    key = serialization.load_der_public_key(spki)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def test_sealed_key_is_sgx_seal_data_format(program: EnclaveProgram, sealed: bytes) -> None:
    blob = SealedData.parse(sealed)
    identity = program._identity
    request = blob.key_request
    # sgx_seal_data's defaults (SGX_FORMATS §4), with this enclave's own SVNs.
    assert (request.key_name, request.key_policy) == (4, 0x2)
    assert (request.attribute_mask.flags, request.attribute_mask.xfrm) == (0xFF0000000000000B, 0)
    assert request.misc_mask == 0xF0000000
    assert (request.isv_svn, request.cpu_svn, request.config_svn) == (identity.isv_svn, identity.cpu_svn, 0)
    assert blob.plain_text_offset == 32  # sgx_ec256_private_t
    aad = blob.additional_mac_text
    assert len(aad) == 112 and aad[:16] == b"sgx-iot key v1\0\0"
    assert aad[16:48] == identity.mrsigner and aad[48:80] == identity.mrenclave
    assert len(sealed) == 560 + 32 + 112


def test_every_provision_is_a_new_key_with_a_fresh_key_id(program: EnclaveProgram, sealed: bytes) -> None:
    other = ecall(program, Op.PROVISION, MRSIGNER).items
    assert SealedData.parse(other[0]).key_request.key_id != SealedData.parse(sealed).key_request.key_id
    assert other[1] != ecall(program, Op.PUBLIC_KEY, sealed).items[0]


def test_mrenclave_policy(program: EnclaveProgram) -> None:
    sealed = ecall(program, Op.PROVISION, MRENCLAVE).items[0]
    assert SealedData.parse(sealed).key_request.key_policy == 0x1
    assert ecall(program, Op.SIGN, sealed, b"x").kind == STATUS_OK


def test_public_key_is_derived_from_the_sealed_key(program: EnclaveProgram) -> None:
    sealed, spki = ecall(program, Op.PROVISION, MRSIGNER).items
    assert ecall(program, Op.PUBLIC_KEY, sealed).items == [spki]
    fresh = launch_program(program._runtime._platform.store.folder)  # same platform, another enclave instance
    assert ecall(fresh, Op.PUBLIC_KEY, sealed).items == [spki]


def test_sign_batch_verifies(program: EnclaveProgram, sealed: bytes) -> None:
    messages = [b"", b"reading 1", bytes(range(256)) * 40]
    spki, *signatures = ecall(program, Op.SIGN, sealed, *messages).items
    key = public_key(spki)
    for message, signature in zip(messages, signatures, strict=True):
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    digests = [hashlib.sha256(m).digest() for m in messages]
    spki2, *signatures2 = ecall(program, Op.SIGN_DIGESTS, sealed, *digests).items
    assert spki2 == spki
    for message, signature in zip(messages, signatures2, strict=True):
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        key.verify(signature, hashlib.sha256(message).digest(), ec.ECDSA(Prehashed(hashes.SHA256())))


def test_attest_binds_the_derived_key_and_the_nonce(program: EnclaveProgram, sealed: bytes) -> None:
    spki, report_bytes, quote = ecall(program, Op.ATTEST, sealed, NONCE, b"").items
    report = Report.parse(report_bytes)
    expected = hashlib.sha256(spki + NONCE).digest() + bytes(32)  # the definition, computed here
    assert report.body.report_data == expected == bind_key(public_key(spki), NONCE)
    assert report.body.mr_enclave == installed_build().mrenclave
    assert quote[:2] == b"\x03\x00" and quote[48 : 48 + 384] == report.body.to_bytes()
    # Targeted at another enclave (here: itself): a REPORT it can verify, and no quote.
    target = program._runtime.target_info().to_bytes()
    _, own_report, no_quote = ecall(program, Op.ATTEST, sealed, NONCE, target).items
    program._runtime.verify_report(Report.parse(own_report))
    assert no_quote == b""


# --- refusals ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("op", "items", "code"),
    [
        (99, [], "UNKNOWN_OP"),
        (Op.IDENTITY, [b"x"], "BAD_ARGUMENT"),
        (Op.PROVISION, [], "BAD_ARGUMENT"),
        (Op.PROVISION, [b"\x02"], "BAD_ARGUMENT"),
        (Op.PROVISION, [b"\x03\x00"], "BAD_ARGUMENT"),
        (Op.PROVISION, [b"\x04\x00"], "BAD_ARGUMENT"),
        (Op.PUBLIC_KEY, [], "BAD_ARGUMENT"),
        (Op.ATTEST, [b"", NONCE], "BAD_ARGUMENT"),
        (Op.SIGN, [], "BAD_ARGUMENT"),
        (Op.SIGN_DIGESTS, [], "BAD_ARGUMENT"),
        (Op.PUBLIC_KEY, [b""], "UNSEAL_CORRUPT"),
        (Op.PUBLIC_KEY, [bytes(70000)], "BAD_ARGUMENT"),
    ],
)
def test_bad_requests_are_refused(program: EnclaveProgram, op: int, items: list[bytes], code: str) -> None:
    assert ecall_error(program, op, *items)[0] == code
    assert ecall(program, Op.IDENTITY).kind == STATUS_OK  # still serving


@pytest.mark.parametrize("nonce", [b"", bytes(15), bytes(65)])
def test_nonce_size(program: EnclaveProgram, sealed: bytes, nonce: bytes) -> None:
    code, message = ecall_error(program, Op.ATTEST, sealed, nonce, b"")
    assert code == "BAD_ARGUMENT" and "16 to 64 bytes" in message


def test_bad_target_and_digests(program: EnclaveProgram, sealed: bytes) -> None:
    assert ecall_error(program, Op.ATTEST, sealed, NONCE, bytes(511))[0] == "BAD_ARGUMENT"
    code, message = ecall_error(program, Op.SIGN_DIGESTS, sealed, bytes(31))
    assert code == "BAD_ARGUMENT" and "32-byte" in message


@pytest.mark.parametrize(
    "body",
    [b"", b"\x01", bytes([2, 1, 0, 0, 0, 0]), bytes([1, 1]) + struct.pack("<I", 3), b"\xff" * 40],
)
def test_malformed_frames_are_refused(program: EnclaveProgram, body: bytes) -> None:
    reply = decode_body(program.handle(body))
    code, _ = decode_error(reply.items)
    assert code in ("BAD_FRAME", "UNSUPPORTED_VERSION")
    assert ecall(program, Op.IDENTITY).kind == STATUS_OK


def test_every_single_bit_flip_of_the_sealed_key_is_refused(platform: Path) -> None:
    program = launch_program(platform)
    sealed = ecall(program, Op.PROVISION, MRSIGNER).items[0]
    descriptor_identity = range(560 + 32 + 16, len(sealed))  # cleartext MRSIGNER, MRENCLAVE, tag, attributes
    isv_svn = range(4, 6)
    for bit in range(len(sealed) * 8):
        flipped = bytearray(sealed)
        flipped[bit // 8] ^= 1 << (bit % 8)
        fresh = EnclaveProgram(program._runtime)  # no cache from earlier calls
        code, _ = ecall_error(fresh, Op.PUBLIC_KEY, bytes(flipped))
        if code != "UNSEAL_CORRUPT":
            # A flip in the cleartext descriptor is diagnosed from it (and still refused); a higher ISVSVN is newer.
            assert bit // 8 in descriptor_identity or (bit // 8 in isv_svn and code == "UNSEAL_REFUSED"), (bit, code)


def test_flipped_ciphertext_bit_is_corrupt(program: EnclaveProgram, sealed: bytes) -> None:
    flipped = bytearray(sealed)
    flipped[560] ^= 0x01
    code, message = ecall_error(program, Op.SIGN, bytes(flipped), b"x")
    assert code == "UNSEAL_CORRUPT" and "corrupt" in message


def test_truncated_blob_is_corrupt(program: EnclaveProgram, sealed: bytes) -> None:
    code, message = ecall_error(program, Op.SIGN, sealed[:-1], b"x")
    assert code == "UNSEAL_CORRUPT" and "SealedData" in message


def test_blob_from_another_platform(program: EnclaveProgram, sealed: bytes, tmp_path: Path) -> None:
    elsewhere = launch_program(tmp_path / "other-platform")
    code, message = ecall_error(elsewhere, Op.SIGN, sealed, b"x")
    assert code == "UNSEAL_OTHER_PLATFORM" and "another platform" in message


def test_enclave_signed_by_another_key_cannot_unseal_mrsigner_key(platform: Path, sealed: bytes) -> None:
    resigned = launch_program(platform, key_index=1)
    code, message = ecall_error(resigned, Op.ATTEST, sealed, NONCE, b"")
    assert code == "UNSEAL_OTHER_SIGNER"
    original = launch_program(platform)._identity.mrsigner.hex()
    assert original in message and resigned._identity.mrsigner.hex() in message


def test_new_build_same_signer(platform: Path, tmp_path: Path) -> None:
    """MRSIGNER keys survive an enclave update; MRENCLAVE keys do not (each refusal names both MRENCLAVEs)."""
    old = launch_program(platform)
    by_signer = ecall(old, Op.PROVISION, MRSIGNER).items[0]
    by_enclave = ecall(old, Op.PROVISION, MRENCLAVE).items[0]
    root = copy_tree(tmp_path)
    (root / "sgx_iot/enclave/program.py").write_bytes((root / "sgx_iot/enclave/program.py").read_bytes() + b"\n")
    new = launch_program(platform, image.build(root))
    assert new._identity.mrenclave != old._identity.mrenclave
    assert ecall(new, Op.SIGN, by_signer, b"x").kind == STATUS_OK
    code, message = ecall_error(new, Op.SIGN, by_enclave, b"x")
    assert code == "UNSEAL_OTHER_ENCLAVE"
    assert old._identity.mrenclave.hex() in message and new._identity.mrenclave.hex() in message


def test_debug_and_production_launches_do_not_share_keys(platform: Path) -> None:
    debug = launch_program(platform, debug=True)
    sealed = ecall(debug, Op.PROVISION, MRSIGNER).items[0]
    code, message = ecall_error(launch_program(platform), Op.SIGN, sealed, b"x")
    assert code == "UNSEAL_OTHER_ENCLAVE" and "debug" in message


def test_key_sealed_by_a_newer_version_is_refused(platform: Path) -> None:
    newer = launch_program(platform, isv_svn=5)
    sealed = ecall(newer, Op.PROVISION, MRSIGNER).items[0]
    code, message = ecall_error(launch_program(platform, isv_svn=4), Op.SIGN, sealed, b"x")
    assert code == "UNSEAL_REFUSED" and "ISVSVN 5" in message
    assert ecall(launch_program(platform, isv_svn=6), Op.SIGN, sealed, b"x").kind == STATUS_OK


def test_internal_errors_do_not_leak_details(program: EnclaveProgram, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(items: list[bytes]) -> list[bytes]:
        raise RuntimeError("secret 1234")

    monkeypatch.setitem(program._handlers, Op.IDENTITY, boom)
    code, message = ecall_error(program, Op.IDENTITY)
    assert code == "INTERNAL" and "secret" not in message and "RuntimeError" in message
