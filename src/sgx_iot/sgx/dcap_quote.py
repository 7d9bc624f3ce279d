"""DCAP (ECDSA) quote version 3 (``sgx_quote3_t``) with its signature data. Layout: SGX_FORMATS.md §6.

::

    header (48) ‖ ISV report body (384) ‖ signature_data_len u32 ‖ signature_data:
      isv_signature (64, r‖s BE) ‖ attestation_key (64, x‖y BE) ‖ QE report body (384) ‖ QE report signature (64)
      ‖ qe_auth_data {u16 size, bytes} ‖ certification {u16 type, u32 size, bytes}  (type 5 = PEM PCK chain)

Parsing is strict (exact lengths, no trailing bytes) and keeps every byte, so ``parse(q.to_bytes()) == q``. The
pure cryptographic checks of the quote itself (ISV signature, QE report binding, QE report signature) are here;
chain, collateral and TCB evaluation belong to :mod:`sgx_iot.verify`.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import ClassVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot.errors import FormatError, VerificationError
from sgx_iot.sgx._codec import Layout, LayoutStructure, Reader, check_fields_match, u16, u32
from sgx_iot.sgx.ecdsa import public_key_from_xy, raw_to_der
from sgx_iot.sgx.report import ReportBody

INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
"""QE vendor ID of Intel's quoting enclave."""

QUOTE_VERSION = 3
ATT_KEY_TYPE_ECDSA_P256 = 2
CERT_TYPE_PCK_CHAIN = 5
HEADER_SIZE = 48
SIGNED_SIZE = 432  # header ‖ report body: what the attestation key signs
_SIG_DATA_FIXED = 64 + 64 + ReportBody.SIZE + 64


@dataclass(frozen=True)
class QuoteHeader(LayoutStructure):
    """The 48-byte quote header. ``att_key_data_0`` is the TEE type in v4 quotes (0 = SGX).

    :meth:`parse` accepts any version and key type; :meth:`DcapQuote.parse` refuses all but 3 and ECDSA-P256.
    """

    version: int = QUOTE_VERSION
    att_key_type: int = ATT_KEY_TYPE_ECDSA_P256
    att_key_data_0: int = 0
    qe_svn: int = 0
    pce_svn: int = 0
    qe_vendor_id: bytes = INTEL_QE_VENDOR_ID
    user_data: bytes = bytes(20)

    SIZE: ClassVar[int] = HEADER_SIZE


QuoteHeader.LAYOUT = Layout(
    "QuoteHeader",
    HEADER_SIZE,
    [
        ("version", 2, int),
        ("att_key_type", 2, int),
        ("att_key_data_0", 4, int),
        ("qe_svn", 2, int),
        ("pce_svn", 2, int),
        ("qe_vendor_id", 16, bytes),
        ("user_data", 20, bytes),
    ],
)
check_fields_match(QuoteHeader, QuoteHeader.LAYOUT)


@dataclass(frozen=True)
class CertificationData:
    """QE certification data: a type and opaque bytes (type 5: PEM PCK chain leaf → root, often NUL-terminated)."""

    cert_type: int
    data: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.cert_type <= 0xFFFF:
            raise ValueError(f"CertificationData.cert_type {self.cert_type} does not fit in u16")
        if len(self.data) > 0xFFFFFFFF:
            raise ValueError("CertificationData.data is too long")

    @classmethod
    def parse(cls, data: bytes) -> CertificationData:
        """``u16 type ‖ u32 size ‖ size bytes``, exactly (``FormatError`` otherwise)."""
        reader = Reader(data, "CertificationData")
        out = cls._read(reader)
        reader.expect_end("certification")
        return out

    @classmethod
    def _read(cls, reader: Reader) -> CertificationData:
        cert_type = reader.u16("cert_type")
        size = reader.u32("cert_data_size")
        return cls(cert_type, reader.bytes(size, "cert_data"))

    def to_bytes(self) -> bytes:
        """The encoding ``u16 type ‖ u32 size ‖ data``."""
        return u16(self.cert_type) + u32(len(self.data)) + self.data

    def pem_chain(self) -> list[x509.Certificate]:
        """The certificates of a type-5 PEM chain, leaf first (``FormatError`` for another type or bad PEM)."""
        if self.cert_type != CERT_TYPE_PCK_CHAIN:
            raise FormatError(
                "CertificationData", "cert_type", 0, f"type {self.cert_type} is not 5 (PEM PCK certificate chain)"
            )
        text = self.data.rstrip(b"\x00")
        if b"\x00" in text:
            raise FormatError("CertificationData", "cert_data", 6, "NUL byte inside the PEM chain")
        try:
            certs = x509.load_pem_x509_certificates(text)
        except ValueError as exc:
            raise FormatError("CertificationData", "cert_data", 6, f"not a PEM certificate chain ({exc})") from None
        return certs


@dataclass(frozen=True)
class QuoteSignatureData:
    """The variable-length signature data of a v3 ECDSA quote."""

    isv_signature: bytes
    attestation_key: bytes
    qe_report: ReportBody
    qe_report_signature: bytes
    qe_auth_data: bytes
    certification: CertificationData

    def __post_init__(self) -> None:
        for name in ("isv_signature", "attestation_key", "qe_report_signature"):
            if len(getattr(self, name)) != 64:
                raise ValueError(f"QuoteSignatureData.{name} must be 64 bytes")
        if len(self.qe_auth_data) > 0xFFFF:
            raise ValueError("QuoteSignatureData.qe_auth_data is longer than 65535 bytes")

    @classmethod
    def parse(cls, data: bytes) -> QuoteSignatureData:
        """Exactly one signature data structure (``FormatError`` on truncation or trailing bytes)."""
        reader = Reader(data, "QuoteSignatureData")
        out = cls._read(reader)
        reader.expect_end("certification")
        return out

    @classmethod
    def _read(cls, reader: Reader) -> QuoteSignatureData:
        isv_signature = reader.bytes(64, "isv_signature")
        attestation_key = reader.bytes(64, "attestation_key")
        qe_report = ReportBody.parse(reader.bytes(ReportBody.SIZE, "qe_report"))
        qe_report_signature = reader.bytes(64, "qe_report_signature")
        auth_size = reader.u16("qe_auth_data_size")
        qe_auth_data = reader.bytes(auth_size, "qe_auth_data")
        certification = CertificationData._read(reader)
        return cls(isv_signature, attestation_key, qe_report, qe_report_signature, qe_auth_data, certification)

    def to_bytes(self) -> bytes:
        """The encoding (its length is the quote's ``signature_data_len``)."""
        return b"".join(
            [
                self.isv_signature,
                self.attestation_key,
                self.qe_report.to_bytes(),
                self.qe_report_signature,
                u16(len(self.qe_auth_data)),
                self.qe_auth_data,
                self.certification.to_bytes(),
            ]
        )


@dataclass(frozen=True)
class DcapQuote:
    """A DCAP quote v3 with an ECDSA-P256 attestation key."""

    header: QuoteHeader
    report_body: ReportBody
    signature_data: QuoteSignatureData

    @classmethod
    def parse(cls, data: bytes) -> DcapQuote:
        """Parse a whole quote; ``FormatError`` unless version 3, key type 2 and exact lengths."""
        reader = Reader(data, "DcapQuote")
        header = QuoteHeader.parse(reader.bytes(HEADER_SIZE, "header"))
        if header.version != QUOTE_VERSION:
            raise FormatError("DcapQuote", "header.version", 0, f"version {header.version} is not supported (only 3)")
        if header.att_key_type != ATT_KEY_TYPE_ECDSA_P256:
            raise FormatError(
                "DcapQuote",
                "header.att_key_type",
                2,
                f"attestation key type {header.att_key_type} is not 2 (ECDSA-P256)",
            )
        report_body = ReportBody.parse(reader.bytes(ReportBody.SIZE, "report_body"))
        sig_len = reader.u32("signature_data_len")
        if sig_len != reader.remaining:
            raise reader.fail(
                "signature_data_len",
                f"says {sig_len} bytes but {reader.remaining} follow",
                offset=SIGNED_SIZE,
            )
        sig_reader = Reader(reader.rest("signature_data"), "DcapQuote.signature_data", base=SIGNED_SIZE + 4)
        signature_data = QuoteSignatureData._read(sig_reader)
        sig_reader.expect_end("certification")
        return cls(header, report_body, signature_data)

    def to_bytes(self) -> bytes:
        """The quote bytes."""
        sig = self.signature_data.to_bytes()
        return self.signed_portion() + u32(len(sig)) + sig

    def signed_portion(self) -> bytes:
        """The 432 bytes the attestation key signs: header ‖ ISV report body."""
        return self.header.to_bytes() + self.report_body.to_bytes()

    def pck_chain(self) -> list[x509.Certificate]:
        """The PCK certificate chain from the certification data, leaf first (``FormatError`` if not type 5)."""
        return self.signature_data.certification.pem_chain()

    # --- the quote's own cryptographic consistency (no PKI, no collateral) ----------------------------------

    def verify_isv_signature(self) -> None:
        """The attestation key signed header ‖ report body; ``VerificationError`` QUOTE_BAD_SIGNATURE otherwise."""
        sig = self.signature_data
        try:
            key = public_key_from_xy(sig.attestation_key)
        except FormatError:
            raise VerificationError(
                "QUOTE_BAD_SIGNATURE", "the quote's attestation key is not a valid P-256 public key"
            ) from None
        if not _ecdsa_ok(key, sig.isv_signature, self.signed_portion()):
            raise VerificationError(
                "QUOTE_BAD_SIGNATURE", "the quote signature does not verify with its attestation key"
            )

    def verify_qe_report_binding(self) -> None:
        """QE REPORTDATA = SHA-256(attestation key ‖ QE auth data) ‖ 32 zero bytes.

        ``VerificationError`` QE_REPORT_DATA_MISMATCH otherwise.
        """
        sig = self.signature_data
        expected = hashlib.sha256(sig.attestation_key + sig.qe_auth_data).digest() + bytes(32)
        if not hmac.compare_digest(sig.qe_report.report_data, expected):
            raise VerificationError(
                "QE_REPORT_DATA_MISMATCH",
                "the QE report does not bind the attestation key (REPORTDATA is not SHA-256(key ‖ auth data) ‖ 0)",
            )

    def verify_qe_report_signature(self, pck_public_key: ec.EllipticCurvePublicKey) -> None:
        """The PCK key signed the QE report body; ``VerificationError`` QE_REPORT_BAD_SIGNATURE otherwise."""
        sig = self.signature_data
        if not isinstance(pck_public_key, ec.EllipticCurvePublicKey) or not isinstance(
            pck_public_key.curve, ec.SECP256R1
        ):
            raise VerificationError("QE_REPORT_BAD_SIGNATURE", "the PCK public key is not a P-256 key")
        if not _ecdsa_ok(pck_public_key, sig.qe_report_signature, sig.qe_report.to_bytes()):
            raise VerificationError(
                "QE_REPORT_BAD_SIGNATURE", "the QE report signature does not verify with the PCK certificate's key"
            )


def _ecdsa_ok(key: ec.EllipticCurvePublicKey, sig64: bytes, message: bytes) -> bool:
    try:
        key.verify(raw_to_der(sig64), message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
