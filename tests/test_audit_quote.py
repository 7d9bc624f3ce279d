"""A DCAP quote checked without collateral (``audit._quote``): PCK chain to the pinned root, then the quote's
own signatures. Real quotes from vectors/README.md; synthetic chains for the refusals."""

from __future__ import annotations

import datetime
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from sgx_iot.audit._quote import verify_quote_signatures
from sgx_iot.errors import UsageError, VerificationError
from sgx_iot.sgx.dcap_quote import CertificationData, DcapQuote

pytestmark = pytest.mark.vectors

BAZINGA_QUOTE = "dcap/bazingajack-seal/BazingaJack.quote.dat"
SAMPLE_QUOTE = "dcap/dcap-qvl-sample/sgx_quote"
SAMPLE_NOW = 1752919277  # inside the sample's validity window (vectors/README.md)
START = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
END = datetime.datetime(2040, 1, 1, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def intel_root(vectors: Path) -> bytes:
    return (vectors / "roots" / "Intel_SGX_Root_CA.der").read_bytes()


def _cert(cn: str, key: ec.EllipticCurvePrivateKey, issuer_cn: str, issuer_key: ec.EllipticCurvePrivateKey,
          *, ca: bool | None) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(START)
        .not_valid_after(END)
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


def _with_chain(quote: DcapQuote, chain: list[x509.Certificate]) -> DcapQuote:
    pem = b"".join(c.public_bytes(Encoding.PEM) for c in chain) + b"\x00"
    return replace(quote, signature_data=replace(quote.signature_data, certification=CertificationData(5, pem)))


def _synthetic(vectors: Path, *, intermediate_ca: bool | None) -> tuple[DcapQuote, bytes]:
    """The real quote re-certified by a synthetic root → intermediate → leaf chain (leaf key ≠ the real PCK key)."""
    root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _cert("Test Root", root_key, "Test Root", root_key, ca=True)
    mid = _cert("Test Intermediate", mid_key, "Test Root", root_key, ca=intermediate_ca)
    leaf = _cert("Test PCK", leaf_key, "Test Intermediate", mid_key, ca=False)
    quote = DcapQuote.parse((vectors / BAZINGA_QUOTE).read_bytes())
    return _with_chain(quote, [leaf, mid, root]), root.public_bytes(Encoding.DER)


@pytest.mark.parametrize("name", [BAZINGA_QUOTE, SAMPLE_QUOTE])
def test_real_quotes_verify_to_the_intel_root(vectors: Path, intel_root: bytes, name: str) -> None:
    verify_quote_signatures(DcapQuote.parse((vectors / name).read_bytes()), intel_root, now=SAMPLE_NOW)


def test_an_issuer_that_is_not_a_ca_breaks_the_chain(vectors: Path) -> None:
    for ca in (False, None):  # BasicConstraints CA:FALSE, or no BasicConstraints at all
        quote, root = _synthetic(vectors, intermediate_ca=ca)
        with pytest.raises(VerificationError, match="not a CA") as info:
            verify_quote_signatures(quote, root, now=SAMPLE_NOW)
        assert info.value.code == "CERTIFICATE_CHAIN_INVALID"


def test_a_well_formed_synthetic_chain_reaches_the_qe_report_check(vectors: Path) -> None:
    """Control for the test above: with CA:TRUE the chain passes, and the QE report (signed by Intel's PCK key,
    not the synthetic leaf's) is what fails."""
    quote, root = _synthetic(vectors, intermediate_ca=True)
    with pytest.raises(VerificationError) as info:
        verify_quote_signatures(quote, root, now=SAMPLE_NOW)
    assert info.value.code == "QE_REPORT_BAD_SIGNATURE"


def test_another_root_is_untrusted(vectors: Path) -> None:
    _, other_root = _synthetic(vectors, intermediate_ca=True)
    quote = DcapQuote.parse((vectors / BAZINGA_QUOTE).read_bytes())
    with pytest.raises(VerificationError) as info:
        verify_quote_signatures(quote, other_root, now=SAMPLE_NOW)
    assert info.value.code == "UNTRUSTED_ROOT"


@pytest.mark.parametrize("now", [-1, 1 << 64, 10**15])
def test_unrepresentable_time_is_a_usage_error(vectors: Path, intel_root: bytes, now: int) -> None:
    quote = DcapQuote.parse((vectors / BAZINGA_QUOTE).read_bytes())
    with pytest.raises(UsageError):
        verify_quote_signatures(quote, intel_root, now=now)
