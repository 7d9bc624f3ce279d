"""Sealed data (``sgx_sealed_data_t``): the real zkTee blob, seal/unseal round trips, tampering (SGX_FORMATS.md §4)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from sgx_iot.errors import FormatError, VerificationError
from sgx_iot.sgx.attributes import Attributes
from sgx_iot.sgx.keyrequest import KeyRequest, seal_key_request
from sgx_iot.sgx.sealed import SealedData, seal, sealed_data_size

KEY = bytes(range(16))
REQUEST = seal_key_request(key_id=b"\x42" * 32, cpu_svn=b"\x01" * 16, isv_svn=1)


def test_zktee_blob(vectors: Path) -> None:
    raw = (vectors / "sealed" / "zkTee.sealed_data_blob.txt").read_bytes()
    assert len(raw) == 587
    blob = SealedData.parse(raw)
    assert blob.to_bytes() == raw
    req = blob.key_request
    assert (req.key_name, req.key_policy) == (4, 0x2)
    assert req.cpu_svn.hex() == "1213ffff010200000000000000000000"
    assert req.attribute_mask == Attributes(0xFF0000000000000B, 0)
    assert req.misc_mask == 0xF0000000
    assert (blob.plain_text_offset, blob.payload_size) == (15, 27)
    assert blob.additional_mac_text == b"aad mac text"
    assert len(blob.encrypted_text) == 15
    assert sealed_data_size(15, 12) == 587
    with pytest.raises(VerificationError) as info:
        blob.unseal(KEY)  # not our platform's key
    assert info.value.code == "SEALED_DATA_MAC_MISMATCH"


def test_seal_matches_sdk_construction() -> None:
    """Independent recomputation: AES-128-GCM, IV 12 zero bytes, AAD = additional MAC text, tag after ciphertext."""
    blob = seal(KEY, REQUEST, b"private key bytes", b"aad")
    expected = AESGCM(KEY).encrypt(bytes(12), b"private key bytes", b"aad")
    assert blob.payload == expected[:-16] + b"aad"
    assert blob.payload_tag == expected[-16:]
    raw = blob.to_bytes()
    assert len(raw) == sealed_data_size(17, 3) == 560 + 20
    assert raw[:512] == REQUEST.to_bytes()
    assert raw[512:516] == (17).to_bytes(4, "little")
    assert raw[528:532] == (20).to_bytes(4, "little")
    assert raw[544:560] == blob.payload_tag
    assert raw[516:528] == bytes(12) and raw[532:544] == bytes(12)


@given(plaintext=st.binary(max_size=200), aad=st.binary(max_size=50))
def test_seal_unseal_round_trip(plaintext: bytes, aad: bytes) -> None:
    blob = seal(KEY, REQUEST, plaintext, aad)
    parsed = SealedData.parse(blob.to_bytes())
    assert parsed == blob
    assert parsed.unseal(KEY) == (plaintext, aad)


def test_wrong_key_and_every_flipped_byte_fail() -> None:
    blob = seal(KEY, REQUEST, b"secret!", b"mac me")
    with pytest.raises(VerificationError) as info:
        blob.unseal(bytes(16))
    assert info.value.code == "SEALED_DATA_MAC_MISMATCH"
    raw = blob.to_bytes()
    for offset in range(544, len(raw)):  # tag, ciphertext, additional MAC text
        tampered = bytearray(raw)
        tampered[offset] ^= 0x01
        with pytest.raises(VerificationError) as info:
            SealedData.parse(bytes(tampered)).unseal(KEY)
        assert info.value.code == "SEALED_DATA_MAC_MISMATCH"


def test_moved_plain_text_offset_fails() -> None:
    blob = seal(KEY, REQUEST, b"secret!", b"mac me")
    with pytest.raises(VerificationError):
        replace(blob, plain_text_offset=blob.plain_text_offset - 1).unseal(KEY)


def test_parse_errors_name_the_field() -> None:
    raw = seal(KEY, REQUEST, b"abc", b"de").to_bytes()
    with pytest.raises(FormatError) as info:
        SealedData.parse(raw + b"\x00")
    assert (info.value.field, info.value.offset) == ("payload_size", 528)
    with pytest.raises(FormatError) as info:
        SealedData.parse(raw[:-1])
    assert info.value.field == "payload_size"
    bad = bytearray(raw)
    bad[512:516] = (6).to_bytes(4, "little")
    with pytest.raises(FormatError) as info:
        SealedData.parse(bytes(bad))
    assert (info.value.field, info.value.offset) == ("plain_text_offset", 512)
    cuts = [(0, "key_request"), (511, "key_request"), (514, "plain_text_offset"), (530, "payload_size"),
            (550, "payload_tag")]
    for cut, field in cuts:
        with pytest.raises(FormatError) as info:
            SealedData.parse(raw[:cut])
        assert info.value.field == field
        assert info.value.structure == "SealedData"


def test_constructor_and_key_checks() -> None:
    with pytest.raises(ValueError):
        SealedData(KeyRequest(), 0, 5, bytes(16), b"abc")
    with pytest.raises(ValueError):
        SealedData(KeyRequest(), 4, 3, bytes(16), b"abc")
    with pytest.raises(ValueError):
        seal(bytes(32), REQUEST, b"x")
    assert seal(os.urandom(16), REQUEST, b"", b"only mac").encrypted_text == b""
