"""REPORTDATA key bindings: sgx-iot's SHA-256(SPKI ‖ nonce) ‖ 0³² and the original gateway's raw x‖y."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from sgx_iot.errors import FormatError, VerificationError
from sgx_iot.sgx.keybinding import bind_key, check_key_binding, legacy_public_key, legacy_report_data

# vectors/README.md, ias/iot-gateway-2021-06
REPORT_DATA_2021_06 = bytes.fromhex(
    "bb7e7fc78e1fce2053a7d87bc7ee4bb5cd6997534529c0ce1fcbb9bc0db8dee9"
    "b0aed3032e9304dd9400b1cf177ecca680947201850ae0cd11b0f23f3495cbf7"
)
SEC1_2021_06 = bytes.fromhex(
    "04e9deb80dbcb9cb1fcec02945539769cdb54beec77bd8a75320ce1f8ec77f7ebb"
    "f7cb95343ff2b011cde00a8501729480a6cc7e17cfb10094dd04932e03d3aeb0"
)
# vectors/README.md, ias/iot-gateway-2021-12
REPORT_DATA_2021_12 = bytes.fromhex(
    "85ca7c890680699863423c2d217841b4bc0ba397ed59aa473c905a0064a44425"
    "7c02bcf97c259df5df9058d012bea6f6269c125c4fc41afbf19605df3857f4c0"
)


def _key() -> ec.EllipticCurvePublicKey:
    return ec.generate_private_key(ec.SECP256R1()).public_key()


def _sec1(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def test_bind_key_is_sha256_of_spki_and_nonce_then_zeros() -> None:
    key, nonce = _key(), b"\x01" * 32
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    report_data = bind_key(key, nonce)
    assert report_data == hashlib.sha256(spki + nonce).digest() + bytes(32)
    assert len(report_data) == 64


def test_check_key_binding_round_trip() -> None:
    key, nonce = _key(), b"nonce-1234"
    check_key_binding(bind_key(key, nonce), key, nonce)


def test_check_key_binding_refuses_another_key() -> None:
    key, nonce = _key(), b"n" * 16
    with pytest.raises(VerificationError) as err:
        check_key_binding(bind_key(key, nonce), _key(), nonce)
    assert err.value.code == "KEY_BINDING_MISMATCH"


def test_check_key_binding_refuses_another_nonce() -> None:
    key = _key()
    with pytest.raises(VerificationError) as err:
        check_key_binding(bind_key(key, b"nonce-A"), key, b"nonce-B")
    assert err.value.code == "KEY_BINDING_MISMATCH"


def test_check_key_binding_refuses_nonzero_tail() -> None:
    key, nonce = _key(), b"n"
    tampered = bind_key(key, nonce)[:63] + b"\x01"
    with pytest.raises(VerificationError) as err:
        check_key_binding(tampered, key, nonce)
    assert err.value.code == "KEY_BINDING_MISMATCH"


@pytest.mark.parametrize("size", [0, 32, 63, 65])
def test_check_key_binding_refuses_wrong_size(size: int) -> None:
    with pytest.raises(FormatError) as err:
        check_key_binding(bytes(size), _key(), b"")
    assert err.value.field == "report_data"


def test_legacy_public_key_of_the_2021_06_gateway() -> None:
    assert _sec1(legacy_public_key(REPORT_DATA_2021_06)) == SEC1_2021_06


def test_legacy_public_key_of_the_2021_12_gateway_is_a_p256_point() -> None:
    key = legacy_public_key(REPORT_DATA_2021_12)
    assert isinstance(key.curve, ec.SECP256R1)
    # little-endian halves, reversed: x is the first half backwards
    assert _sec1(key)[1:33] == REPORT_DATA_2021_12[:32][::-1]


def test_legacy_report_data_round_trip() -> None:
    assert legacy_report_data(legacy_public_key(REPORT_DATA_2021_06)) == REPORT_DATA_2021_06
    key = _key()
    assert _sec1(legacy_public_key(legacy_report_data(key))) == _sec1(key)


def test_legacy_public_key_refuses_a_point_off_the_curve() -> None:
    tampered = bytearray(REPORT_DATA_2021_06)
    tampered[0] ^= 1
    with pytest.raises(FormatError) as err:
        legacy_public_key(bytes(tampered))
    assert "P-256" in err.value.reason


def test_legacy_public_key_refuses_big_endian_halves() -> None:
    # the same key with halves in the wrong byte order is (overwhelmingly likely) not a point
    swapped = REPORT_DATA_2021_06[:32][::-1] + REPORT_DATA_2021_06[32:][::-1]
    with pytest.raises(FormatError):
        legacy_public_key(swapped)


def test_legacy_report_data_refuses_other_curves() -> None:
    with pytest.raises(FormatError):
        legacy_report_data(ec.generate_private_key(ec.SECP384R1()).public_key())


@pytest.mark.vectors
def test_legacy_public_key_matches_the_ias_report_quote(vectors: Path) -> None:
    """The README's REPORTDATA is the one inside the real quote body (checked without the code under test)."""
    import base64

    body = json.loads((vectors / "ias/iot-gateway-2021-06/ias_response_body.exact.json").read_bytes())
    quote = base64.b64decode(body["isvEnclaveQuoteBody"])
    assert quote[48 + 320 : 48 + 384] == REPORT_DATA_2021_06


@given(st.one_of(st.binary(min_size=64, max_size=64), st.binary(max_size=80)))
def test_legacy_public_key_fuzz_raises_only_format_error(data: bytes) -> None:
    try:
        key = legacy_public_key(data)
    except FormatError:
        return
    assert legacy_report_data(key) == data
