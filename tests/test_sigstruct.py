"""SIGSTRUCT: layout, real vectors (vectors/README.md), build + sign + verify, tampering (SGX_FORMATS.md §3)."""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_iot.errors import FormatError, UsageError, VerificationError
from sgx_iot.sgx.attributes import Attributes
from sgx_iot.sgx.sigstruct import Sigstruct, generate_signing_key

# (path, date, MRENCLAVE, MRSIGNER, ISVSVN) from vectors/README.md
VECTORS = [
    (
        "ias/iot-gateway-2021-06/sigstruct.bin",
        "2021-06-03",
        "4985c91b6a9cf7a4d56384d25ed9008d9be7f61fa108e4e2669247b11acc013f",
        "3db0e0741cfed690b4ce6499e3fb078dfb3918976747d282f6818cf387dccb8e",
        1234,
    ),
    (
        "ias/iot-gateway-2021-12/sigstruct.bin",
        None,
        "72cfdb1e92ca2354857bc3ddd5133888fc122bc0eb467e42b80c61bdf027f43f",
        "7b9b32fa1d255acf8ebb245308b7ce7a1f755a5d325a64af1309f2e9c686e00d",
        1234,
    ),
    (
        "sigstruct/auditee-tests.sigstruct",
        "2021-02-10",
        "f19de84787f1a90ad7bc2d4c2fd952e05545c6f177e8b10b112a4cef31ba0454",
        "bd71c6380ef77c5417e8b2d1ce2d4b6504b9f418e5049342440cfff2443d95bd",
        1,
    ),
]


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return generate_signing_key()


@pytest.mark.parametrize(("path", "date", "mrenclave", "mrsigner", "isv_svn"), VECTORS)
def test_real_sigstruct(
    vectors: Path, path: str, date: str | None, mrenclave: str, mrsigner: str, isv_svn: int
) -> None:
    raw = (vectors / path).read_bytes()
    css = Sigstruct.parse(raw)
    assert css.to_bytes() == raw
    css.verify()
    if date is not None:
        assert css.date_string() == date
        assert css.date == int(date.replace("-", ""), 16)
    assert css.enclave_hash.hex() == mrenclave
    assert css.mrsigner.hex() == mrsigner
    assert hashlib.sha256(raw[128:512]).hexdigest() == mrsigner
    assert (css.isv_prod_id, css.isv_svn) == (0, isv_svn)
    assert css.attributes == Attributes(0x4, 0x3)
    assert css.attribute_mask == Attributes(0xFFFFFFFFFFFFFFFD, 0xFFFFFFFFFFFFFF1B)
    assert css.exponent == 3
    assert css.public_key().key_size == 3072
    assert css.signed_message() == raw[0:128] + raw[900:1028]


@pytest.mark.parametrize("offset", [0, 20, 127, 900, 960, 1024, 1027])
def test_flipped_signed_byte_fails(vectors: Path, offset: int) -> None:
    raw = bytearray((vectors / VECTORS[0][0]).read_bytes())
    raw[offset] ^= 0x01
    with pytest.raises(VerificationError) as info:
        Sigstruct.parse(bytes(raw)).verify()
    assert info.value.code == "SIGSTRUCT_BAD_SIGNATURE"


def test_flipped_q1_q2_and_exponent(vectors: Path) -> None:
    raw = (vectors / VECTORS[2][0]).read_bytes()
    for offset in (1040, 1424 + 383):
        tampered = bytearray(raw)
        tampered[offset] ^= 0x80
        with pytest.raises(VerificationError) as info:
            Sigstruct.parse(bytes(tampered)).verify()
        assert info.value.code == "SIGSTRUCT_BAD_Q1Q2"
    with pytest.raises(VerificationError) as info:
        replace(Sigstruct.parse(raw), exponent=65537).verify()
    assert info.value.code == "SIGSTRUCT_BAD_EXPONENT"
    with pytest.raises(VerificationError) as info:
        replace(Sigstruct.parse(raw), signature=bytes(384)).verify()
    assert info.value.code == "SIGSTRUCT_BAD_SIGNATURE"


def test_modulus_swap_fails(vectors: Path, signing_key: rsa.RSAPrivateKey) -> None:
    css = Sigstruct.parse((vectors / VECTORS[0][0]).read_bytes())
    other = replace(css, modulus=signing_key.public_key().public_numbers().n.to_bytes(384, "little"))
    with pytest.raises(VerificationError) as info:
        other.verify()
    assert info.value.code == "SIGSTRUCT_BAD_SIGNATURE"


def test_build_sign_verify(signing_key: rsa.RSAPrivateKey) -> None:
    css = Sigstruct.build(
        enclave_hash=bytes(range(32)),
        isv_prod_id=7,
        isv_svn=3,
        attributes=Attributes(0x4, 0x3),
        attribute_mask=Attributes(0xFF00FFFFFFFFFFFD, 0xFFFFFFFFFFFFFF1B),
        date=datetime.date(2024, 2, 29),
        release=False,
    )
    raw = css.to_bytes()
    assert raw[0:16].hex() == "06000000e10000000000010000000000"
    assert raw[16:20] == bytes(4)
    assert raw[20:24].hex() == "29022420"  # BCD 0x20240229, little-endian
    assert raw[24:40].hex() == "01010000600000006000000001000000"
    assert raw[960:992] == bytes(range(32))
    assert raw[1024:1028] == b"\x07\x00\x03\x00"
    with pytest.raises(VerificationError):
        css.verify()  # unsigned

    signed = css.sign(signing_key)
    signed.verify()
    assert Sigstruct.parse(signed.to_bytes()) == signed
    assert signed.signed_message() == css.signed_message()
    modulus_le = signing_key.public_key().public_numbers().n.to_bytes(384, "little")
    assert signed.mrsigner == hashlib.sha256(modulus_le).digest()
    assert signed.date_string() == "2024-02-29"
    assert not signed.release_type
    release = Sigstruct.build(
        enclave_hash=bytes(32), isv_prod_id=0, isv_svn=0, attributes=Attributes(), attribute_mask=Attributes()
    )
    assert release.release_type and release.to_bytes()[12:16] == b"\x00\x00\x00\x80"


def test_sign_refuses_wrong_key() -> None:
    css = Sigstruct.build(
        enclave_hash=bytes(32), isv_prod_id=0, isv_svn=0, attributes=Attributes(), attribute_mask=Attributes()
    )
    with pytest.raises(UsageError):
        css.sign(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def test_invalid_date_string() -> None:
    assert Sigstruct(date=0x2021AB01).date_string() == "0x2021ab01"
    assert Sigstruct(date=0x20211399).date_value() is None


@settings(max_examples=50)
@given(st.binary(min_size=1808, max_size=1808))
def test_any_bytes_round_trip_and_verify_only_raises_verification_error(raw: bytes) -> None:
    css = Sigstruct.parse(raw)
    assert css.to_bytes() == raw
    with pytest.raises(VerificationError):
        css.verify()


@pytest.mark.parametrize("size", [0, 1, 1807, 1809])
def test_wrong_size(size: int) -> None:
    with pytest.raises(FormatError) as info:
        Sigstruct.parse(bytes(size))
    assert info.value.structure == "Sigstruct"
