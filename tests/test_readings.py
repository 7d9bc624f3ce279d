"""Signed readings: the canonical encoding (byte for byte, from the documented layout), verification, wire form."""

from __future__ import annotations

import base64
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_iot.errors import FormatError, VerificationError
from sgx_iot.verify.readings import MAX_PAYLOAD, Reading, SignedReading, sign_reading, verify_reading

KEY = ec.generate_private_key(ec.SECP256R1())
OTHER = ec.generate_private_key(ec.SECP256R1())


def test_canonical_encoding_matches_documented_layout() -> None:
    r = Reading("gw-1", 7, 1_700_000_000, b"temp=21.5\n")
    expected = (
        b"sgx-iot-reading/1\x00"
        + b"\x00\x04" + b"gw-1"
        + bytes.fromhex("0000000000000007")
        + bytes.fromhex("000000006553f100")
        + b"\x00\x00\x00\x0a" + b"temp=21.5\n"
    )
    assert r.to_bytes() == expected
    assert Reading.parse(expected) == r


def test_negative_timestamp_is_twos_complement() -> None:
    assert Reading("g", 0, -1, b"").to_bytes()[-12:-4] == b"\xff" * 8


def test_sign_and_verify() -> None:
    r = Reading("gw-1", 1, 1, b"x")
    sig = sign_reading(r, KEY)
    verify_reading(r, sig, KEY.public_key())


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r: Reading(r.gateway, r.seq + 1, r.timestamp, r.payload),
        lambda r: Reading(r.gateway, r.seq, r.timestamp + 1, r.payload),
        lambda r: Reading(r.gateway, r.seq, r.timestamp, r.payload + b"!"),
        lambda r: Reading("gw-2", r.seq, r.timestamp, r.payload),
    ],
)
def test_any_modified_field_is_bad_signature(tamper) -> None:  # type: ignore[no-untyped-def]
    r = Reading("gw-1", 1, 1_700_000_000, b"payload")
    sig = sign_reading(r, KEY)
    with pytest.raises(VerificationError) as info:
        verify_reading(tamper(r), sig, KEY.public_key())
    assert info.value.code == "BAD_SIGNATURE"


def test_other_key_and_garbage_signatures_are_bad_signature() -> None:
    r = Reading("gw-1", 1, 1, b"x")
    for sig in (sign_reading(r, OTHER), b"", b"\x30\x00", b"\x00" * 72, b"\x30" * 500):
        with pytest.raises(VerificationError) as info:
            verify_reading(r, sig, KEY.public_key())
        assert info.value.code == "BAD_SIGNATURE"


def test_openssl_verifies_the_canonical_bytes(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl binary not installed")
    r = Reading("gw-1", 42, 1_700_000_000, b"Sensor_Data")
    (tmp_path / "msg").write_bytes(r.to_bytes())
    (tmp_path / "sig").write_bytes(sign_reading(r, KEY))
    (tmp_path / "pub.pem").write_bytes(KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    out = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(tmp_path / "pub.pem"), "-signature",
                          str(tmp_path / "sig"), str(tmp_path / "msg")], capture_output=True, text=True)
    assert out.returncode == 0 and "Verified OK" in out.stdout


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("", 1, 1, b""), "gateway"),
        (("a" * 65, 1, 1, b""), "gateway"),
        (("gw/1", 1, 1, b""), "gateway"),
        (("gé", 1, 1, b""), "gateway"),
        (("g", -1, 1, b""), "seq"),
        (("g", 2**63, 1, b""), "seq"),
        (("g", True, 1, b""), "seq"),
        (("g", 1, 2**63, b""), "timestamp"),
        (("g", 1, "1", b""), "timestamp"),
        (("g", 1, 1, b"x" * (MAX_PAYLOAD + 1)), "payload"),
        (("g", 1, 1, "text"), "payload"),
    ],
)
def test_invalid_fields(args: tuple, field: str) -> None:
    with pytest.raises(FormatError) as info:
        Reading(*args)
    assert info.value.field == field


def test_parse_refuses_truncation_and_trailing_bytes() -> None:
    data = Reading("gw", 1, 2, b"abc").to_bytes()
    for cut in range(len(data)):
        with pytest.raises(FormatError):
            Reading.parse(data[:cut])
    with pytest.raises(FormatError) as info:
        Reading.parse(data + b"\x00")
    assert info.value.field == "(end)"


def test_wire_form_round_trip_and_strictness() -> None:
    r = Reading("gw-1", 3, 4, b"\x00\x01")
    s = SignedReading(r, sign_reading(r, KEY))
    doc = s.to_dict()
    assert doc["payload"] == base64.b64encode(b"\x00\x01").decode()
    assert SignedReading.from_dict(doc) == s
    for change, field in (({"extra": 1}, "extra"), ({"payload": "@@"}, "payload"),
                          ({"signature": "A" * 200}, "signature"), ({"seq": "3"}, "seq")):
        with pytest.raises(FormatError) as info:
            SignedReading.from_dict({**doc, **change})
        assert info.value.field == field
    with pytest.raises(FormatError) as info:
        SignedReading.from_dict({k: v for k, v in doc.items() if k != "timestamp"})
    assert info.value.field == "timestamp"


@pytest.mark.parametrize("name", [".", "..", "", "a" * 65, "gw/1", "gw 1", "é"])
def test_names_that_are_not_gateway_names(name: str) -> None:
    """"." and ".." are refused too: in a URL path (GET /v1/gateways/{name}) they would name folders."""
    with pytest.raises(FormatError) as info:
        Reading(name, 0, 0, b"")
    assert info.value.field == "gateway"


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="abcXYZ09._-", min_size=1, max_size=64).filter(lambda g: g not in (".", "..")),
       st.integers(0, 2**63 - 1),
       st.integers(-(2**63), 2**63 - 1), st.binary(max_size=300))
def test_round_trip_property(gateway: str, seq: int, ts: int, payload: bytes) -> None:
    r = Reading(gateway, seq, ts, payload)
    assert Reading.parse(r.to_bytes()) == r


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_parse_raises_only_format_error(data: bytes) -> None:
    try:
        Reading.parse(b"sgx-iot-reading/1\x00" + data)
    except FormatError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["gateway", "seq", "timestamp", "payload", "signature", "x"]),
                       st.one_of(st.integers(), st.text(max_size=20), st.none(), st.booleans()), max_size=6))
def test_fuzz_wire_form_raises_only_format_error(doc: dict) -> None:
    try:
        SignedReading.from_dict(doc)
    except FormatError:
        pass


def test_sentence_names_gateway_and_seq() -> None:
    r = Reading("gw-9", 12, 0, b"")
    with pytest.raises(VerificationError) as info:
        verify_reading(r, sign_reading(r, OTHER), KEY.public_key())
    assert "12" in str(info.value) and "gw-9" in str(info.value)
    assert struct.calcsize(">QqI") == 20
