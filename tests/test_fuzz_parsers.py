"""Fuzzing: every sgx parser (and the checks run on parsed data) may raise only the project's own errors.

Random bytes, and mutations / truncations / extensions of the real vectors. ``FormatError`` is the only error a
parser may raise; the cryptographic checks may raise only ``VerificationError``; :func:`describe` never raises.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgx_iot.errors import FormatError, VerificationError
from sgx_iot.sgx.attributes import Attributes
from sgx_iot.sgx.dcap_quote import CertificationData, DcapQuote, QuoteHeader, QuoteSignatureData
from sgx_iot.sgx.detect import describe, detect
from sgx_iot.sgx.ecdsa import der_to_raw, public_key_from_xy, raw_to_der
from sgx_iot.sgx.epid_quote import EpidQuote
from sgx_iot.sgx.keyrequest import KeyRequest
from sgx_iot.sgx.report import Report, ReportBody, TargetInfo
from sgx_iot.sgx.sealed import SealedData
from sgx_iot.sgx.sigstruct import Sigstruct

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PARSERS: list[Callable[[bytes], Any]] = [
    Attributes.parse,
    ReportBody.parse,
    Report.parse,
    TargetInfo.parse,
    KeyRequest.parse,
    Sigstruct.parse,
    SealedData.parse,
    EpidQuote.parse,
    QuoteHeader.parse,
    CertificationData.parse,
    QuoteSignatureData.parse,
    DcapQuote.parse,
    public_key_from_xy,
    der_to_raw,
    raw_to_der,
]

# real binary vectors (relative to the vectors folder) to mutate
BINARY_VECTORS = [
    "dcap/dcap-qvl-sample/sgx_quote",
    "dcap/bazingajack-seal/BazingaJack.quote.dat",
    "dcap/bazingajack-seal/BazingaJack.report.dat",
    "ias/iot-gateway-2021-12/quote.bin",
    "ias/iot-gateway-2021-06/sigstruct.bin",
    "sigstruct/auditee-tests.sigstruct",
    "sealed/zkTee.sealed_data_blob.txt",
]
JSON_VECTORS = [
    "ias/iot-gateway-2021-06/ias_report.json",
    "ias/iot-gateway-2021-12/ias_response_body.exact.json",
]


def _exercise(obj: Any) -> None:
    """Run every check a parsed object offers; only VerificationError / FormatError may come out."""
    describe(obj)
    checks: list[Callable[[], Any]] = []
    if isinstance(obj, Sigstruct):
        checks = [obj.verify]
    elif isinstance(obj, DcapQuote):
        checks = [obj.verify_isv_signature, obj.verify_qe_report_binding, obj.pck_chain]
    elif isinstance(obj, SealedData):
        checks = [lambda: obj.unseal(bytes(16))]
    elif isinstance(obj, CertificationData):
        checks = [obj.pem_chain]
    for check in checks:
        try:
            check()
        except (VerificationError, FormatError):
            pass


def _parse_all(data: bytes) -> None:
    for parse in PARSERS:
        try:
            obj = parse(data)
        except FormatError:
            continue
        if hasattr(obj, "to_bytes"):
            assert obj.to_bytes() == data, parse
        _exercise(obj)
    try:
        found = detect(data, "fuzz")
    except FormatError:
        return
    describe(found.obj)
    _exercise(found.obj)


@st.composite
def _mutated(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(0, 4))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] ^= draw(st.integers(1, 255))
    action = draw(st.sampled_from(["none", "truncate", "extend", "cut-middle"]))
    if action == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif action == "extend":
        data += draw(st.binary(min_size=1, max_size=16))
    elif action == "cut-middle" and len(data) > 2:
        a = draw(st.integers(0, len(data) - 1))
        data = data[:a] + data[a + draw(st.integers(1, 64)) :]
    return bytes(data)


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    _parse_all(data)


@FUZZ
@given(st.integers(0, 3), st.binary(max_size=64))
def test_random_bytes_of_structure_sizes(which: int, tail: bytes) -> None:
    size = [16, 384, 432, 512][which]
    _parse_all(tail.ljust(size, b"\x00")[:size])


@FUZZ
@given(st.data())
def test_dcap_header_with_random_tail(data: st.DataObject) -> None:
    """Inputs that pass the quote header checks so the signature-data parser is reached."""
    body = data.draw(st.binary(max_size=1200))
    raw = b"\x03\x00\x02\x00" + bytes(44) + bytes(384) + len(body).to_bytes(4, "little") + body
    _parse_all(raw)


@pytest.mark.parametrize("name", BINARY_VECTORS + JSON_VECTORS)
def test_mutated_vectors(vectors: Path, name: str) -> None:
    original = (vectors / name).read_bytes()

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_mutated(original))
    def run(data: bytes) -> None:
        _parse_all(data)

    run()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)


@FUZZ
@given(
    _JSON,
    st.sampled_from(["bare", "stored", "stored-text"]),
    st.one_of(st.none(), st.text(max_size=600), st.integers()),
)
def test_json_shapes(extra: Any, shape: str, quote_body: Any) -> None:
    body: dict[str, Any] = {"id": "1", "extra": extra}
    if quote_body is not None:
        body["isvEnclaveQuoteBody"] = quote_body
    if shape == "bare":
        document: Any = body
    elif shape == "stored":
        document = {"body": body, "headers": extra}
    else:
        document = {"body": json.dumps(body), "headers": {}}
    _parse_all(json.dumps(document).encode())


def test_truncated_elf_enclave(vectors: Path) -> None:
    """Truncations of a real SDK enclave are refused with FormatError (the ELF path of detect)."""
    data = (vectors / "ias/iot-gateway-2021-06/enclave.signed.so").read_bytes()
    for cut in (4, 64, 100, 1000, len(data) // 2, len(data) - 1):
        with pytest.raises(FormatError):
            detect(data[:cut], "enclave.signed.so")
