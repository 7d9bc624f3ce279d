"""The evidence bundle format: strict parsing, round trip, and only FormatError on bad input."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sgx_iot.errors import FormatError
from sgx_iot.verify.evidence import FORMAT, Evidence

PEM = "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n"


def _evidence() -> Evidence:
    return Evidence("simulated", b"\x03\x00" + bytes(100), PEM, bytes(range(32)),
                    {"mrenclave": "00" * 32, "isv_svn": 1}, None)


def test_round_trip() -> None:
    ev = _evidence()
    assert Evidence.from_json(ev.to_json()) == ev
    assert json.loads(ev.to_json())["format"] == FORMAT


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("nonce"), "nonce"),
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d.update(format="sgx-iot-evidence/2"), "format"),
        (lambda d: d.update(platform="hardware"), "platform"),
        (lambda d: d.update(quote="not base64!"), "quote"),
        (lambda d: d.update(nonce="00" * 8), "nonce"),
        (lambda d: d.update(public_key="ssh-ed25519 AAAA"), "public_key"),
        (lambda d: d.update(enclave={"mrenclave": "00", "owner": "me"}), "enclave"),
        (lambda d: d.update(collateral=[1]), "collateral"),
    ],
)
def test_each_bad_field_is_named(mutate, field: str) -> None:
    doc = _evidence().to_dict()
    mutate(doc)
    with pytest.raises(FormatError) as err:
        Evidence.from_dict(doc)
    assert err.value.field == field


def test_deeply_nested_json_is_a_format_error() -> None:
    with pytest.raises(FormatError, match="nested too deeply"):
        Evidence.from_json("[" * 200_000)


def test_oversized_document_is_refused_before_parsing() -> None:
    with pytest.raises(FormatError, match="larger than"):
        Evidence.from_json(" " * (300 * 1024))


@given(st.binary(max_size=512) | st.text(max_size=512).map(str.encode))
def test_fuzz_only_format_error(data: bytes) -> None:
    try:
        Evidence.from_json(data)
    except FormatError:
        pass
