"""DCAP quote v3: parse the real quotes to the README's values, the quote's own signatures, tampering, truncation."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_iot.errors import FormatError, VerificationError
from sgx_iot.sgx.attributes import Attributes
from sgx_iot.sgx.dcap_quote import (
    INTEL_QE_VENDOR_ID,
    CertificationData,
    DcapQuote,
    QuoteHeader,
    QuoteSignatureData,
)
from sgx_iot.sgx.report import ReportBody
from sgx_iot.sgx.ecdsa import der_to_raw, public_key_from_xy, public_key_to_xy, raw_to_der

SAMPLE = "dcap/dcap-qvl-sample/sgx_quote"
BAZINGA = "dcap/bazingajack-seal/BazingaJack.quote.dat"
ROOT_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"


def _load(vectors: Path, name: str) -> bytes:
    return (vectors / name).read_bytes()


def test_sample_quote_fields(vectors: Path) -> None:
    raw = _load(vectors, SAMPLE)
    assert len(raw) == 4600
    quote = DcapQuote.parse(raw)
    assert quote.to_bytes() == raw
    h = quote.header
    assert (h.version, h.att_key_type, h.att_key_data_0, h.qe_svn, h.pce_svn) == (3, 2, 0, 10, 15)
    assert h.qe_vendor_id.hex() == "939a7233f79c4ca9940a0db3957f0607" == INTEL_QE_VENDOR_ID.hex()
    body = quote.report_body
    assert body.mr_enclave.hex() == "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
    assert body.mr_signer.hex() == "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"
    assert (body.isv_prod_id, body.isv_svn) == (0, 0)
    assert body.attributes == Attributes(0x5, 0xE7) and not body.attributes.debug
    assert body.report_data == b"Hello, world!" + bytes(51)
    sig = quote.signature_data
    assert (sig.qe_report.isv_prod_id, sig.qe_report.isv_svn) == (1, 10)
    assert sig.qe_auth_data == bytes(range(32))
    assert sig.certification.cert_type == 5
    assert sig.certification.data.endswith(b"\x00")
    chain = quote.pck_chain()
    assert [c.subject.rfc4514_string().rsplit("CN=", 1)[1] for c in chain] == [
        "Intel SGX PCK Certificate",
        "Intel SGX PCK Processor CA",
        "Intel SGX Root CA",
    ]
    root_der = (vectors / "roots" / "Intel_SGX_Root_CA.der").read_bytes()
    assert hashlib.sha256(root_der).hexdigest() == ROOT_SHA256
    assert chain[2].public_bytes(Encoding.DER) == root_der


def test_bazingajack_quote_fields(vectors: Path) -> None:
    raw = _load(vectors, BAZINGA)
    assert len(raw) == 4734
    quote = DcapQuote.parse(raw)
    assert quote.to_bytes() == raw
    assert (quote.header.version, quote.header.att_key_type) == (3, 2)
    body = quote.report_body
    assert body.mr_enclave.hex() == "d17c8e8a6cb4629e581865693d12a25f3bb0072dfd7b5cb1d12df7f850fdf0f6"
    assert body.mr_signer.hex() == "ef7de2edeb583a6ca05d147b7b3e41ec6f888e924e877d5b6c034d367c435a1c"
    qe = quote.signature_data.qe_report
    assert qe.mr_signer.hex().startswith("8c4f5775") and qe.mr_signer.hex().endswith("7bff")
    assert (qe.isv_prod_id, qe.isv_svn) == (1, 11)
    assert quote.signature_data.qe_auth_data == bytes(range(32))
    assert len(quote.pck_chain()) == 3


@pytest.mark.parametrize("name", [SAMPLE, BAZINGA])
def test_quote_signatures_verify(vectors: Path, name: str) -> None:
    quote = DcapQuote.parse(_load(vectors, name))
    quote.verify_isv_signature()
    quote.verify_qe_report_binding()
    quote.verify_qe_report_signature(quote.pck_chain()[0].public_key())


@pytest.mark.parametrize(
    ("offset", "code"),
    [
        (48 + 64, "QUOTE_BAD_SIGNATURE"),  # MRENCLAVE
        (48 + 320, "QUOTE_BAD_SIGNATURE"),  # REPORTDATA
        (0 + 8, "QUOTE_BAD_SIGNATURE"),  # header qe_svn
        (436 + 10, "QUOTE_BAD_SIGNATURE"),  # isv signature
        (436 + 64 + 5, "QUOTE_BAD_SIGNATURE"),  # attestation key (also breaks the QE binding)
    ],
)
def test_tampered_isv_part(vectors: Path, offset: int, code: str) -> None:
    raw = bytearray(_load(vectors, SAMPLE))
    raw[offset] ^= 0x01
    quote = DcapQuote.parse(bytes(raw))
    with pytest.raises(VerificationError) as info:
        quote.verify_isv_signature()
    assert info.value.code == code


def test_tampered_qe_parts(vectors: Path) -> None:
    original = DcapQuote.parse(_load(vectors, SAMPLE))
    pck = original.pck_chain()[0].public_key()
    sig = original.signature_data

    other_auth = replace(original, signature_data=replace(sig, qe_auth_data=bytes(32)))
    with pytest.raises(VerificationError) as info:
        other_auth.verify_qe_report_binding()
    assert info.value.code == "QE_REPORT_DATA_MISMATCH"

    other_key = replace(original, signature_data=replace(sig, attestation_key=bytes(64)))
    with pytest.raises(VerificationError) as info:
        other_key.verify_qe_report_binding()
    assert info.value.code == "QE_REPORT_DATA_MISMATCH"
    with pytest.raises(VerificationError) as info:
        other_key.verify_isv_signature()
    assert info.value.code == "QUOTE_BAD_SIGNATURE"

    qe_body = replace(sig.qe_report, isv_svn=sig.qe_report.isv_svn + 1)
    with pytest.raises(VerificationError) as info:
        replace(original, signature_data=replace(sig, qe_report=qe_body)).verify_qe_report_signature(pck)
    assert info.value.code == "QE_REPORT_BAD_SIGNATURE"

    other_pck = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(VerificationError) as info:
        original.verify_qe_report_signature(other_pck)
    assert info.value.code == "QE_REPORT_BAD_SIGNATURE"


def test_every_truncation_is_format_error(vectors: Path) -> None:
    raw = _load(vectors, BAZINGA)
    for cut in list(range(0, 600)) + list(range(600, len(raw), 37)) + [len(raw) - 1]:
        with pytest.raises(FormatError):
            DcapQuote.parse(raw[:cut])


def test_truncation_with_consistent_length_names_the_field(vectors: Path) -> None:
    raw = _load(vectors, SAMPLE)
    # shorten the signature data and fix up signature_data_len: the certification data is now truncated
    cut = raw[:-10]
    fixed = cut[:432] + (len(cut) - 436).to_bytes(4, "little") + cut[436:]
    with pytest.raises(FormatError) as info:
        DcapQuote.parse(fixed)
    assert info.value.field == "cert_data"
    assert info.value.structure == "DcapQuote.signature_data"


def test_trailing_bytes_refused(vectors: Path) -> None:
    raw = _load(vectors, SAMPLE)
    with pytest.raises(FormatError) as info:
        DcapQuote.parse(raw + b"\x00")
    assert info.value.field == "signature_data_len" and info.value.offset == 432
    padded = raw[:432] + (len(raw) - 436 + 1).to_bytes(4, "little") + raw[436:] + b"\x00"
    with pytest.raises(FormatError) as info:
        DcapQuote.parse(padded)
    assert info.value.field == "certification"


def test_wrong_version_or_key_type(vectors: Path) -> None:
    raw = bytearray(_load(vectors, SAMPLE))
    raw[0] = 4
    with pytest.raises(FormatError) as info:
        DcapQuote.parse(bytes(raw))
    assert info.value.field == "header.version"
    raw[0] = 3
    raw[2] = 3
    with pytest.raises(FormatError) as info:
        DcapQuote.parse(bytes(raw))
    assert info.value.field == "header.att_key_type"


def test_certification_data() -> None:
    cert = CertificationData(5, b"not pem\x00")
    with pytest.raises(FormatError):
        cert.pem_chain()
    with pytest.raises(FormatError) as info:
        CertificationData(6, b"").pem_chain()
    assert info.value.field == "cert_type"
    assert CertificationData.parse(CertificationData(3, b"abc").to_bytes()) == CertificationData(3, b"abc")
    with pytest.raises(FormatError):
        CertificationData.parse(b"\x05\x00\x10\x00\x00\x00abc")


def test_build_round_trip() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    sig = QuoteSignatureData(
        isv_signature=bytes(64),
        attestation_key=public_key_to_xy(key.public_key()),
        qe_report=ReportBody(isv_prod_id=1),
        qe_report_signature=bytes(64),
        qe_auth_data=b"\x01\x02",
        certification=CertificationData(5, b"x"),
    )
    quote = DcapQuote(QuoteHeader(qe_svn=2), ReportBody(), sig)
    raw = quote.to_bytes()
    assert DcapQuote.parse(raw) == quote
    assert QuoteSignatureData.parse(sig.to_bytes()) == sig
    assert len(quote.signed_portion()) == 432 and raw[432:436] == len(sig.to_bytes()).to_bytes(4, "little")


@settings(max_examples=200)
@given(st.binary(max_size=64))
def test_ecdsa_helpers_round_trip(junk: bytes) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    xy = public_key_to_xy(key.public_key())
    assert public_key_to_xy(public_key_from_xy(xy)) == xy
    raw = bytes([1]) + junk.ljust(31, b"\x00")[:31] + bytes([2]) + bytes(31)
    assert der_to_raw(raw_to_der(raw)) == raw
    try:
        public_key_from_xy(junk)
    except FormatError:
        pass
    try:
        der_to_raw(junk)
    except FormatError:
        pass
