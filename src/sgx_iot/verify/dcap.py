"""DCAP quote v3 verification with ``dcap-qvl`` (SGX_FORMATS §8.2).

``dcap-qvl`` checks the PCK chain to the root (Intel's embedded root, or one given), the CRLs, the TCB info and QE
identity signatures and validity windows, the QE report (signature by the PCK key and its REPORTDATA binding of the
attestation key), the quote signature, the TCB level and the debug bit. It leaves to the caller what an appraisal
policy decides: accepting a TCB status or advisory, MRENCLAVE/MRSIGNER/ISVSVN, REPORTDATA binding and freshness.

This module wraps it: the quote is parsed with :class:`sgx_iot.sgx.dcap_quote.DcapQuote` first (malformed bytes are
a ``FormatError``), ``dcap-qvl``'s error strings become :class:`VerificationError` codes (the original reason is
kept in the sentence), and the result carries the parsed header and report body.

Example::

    collateral = load_collateral(Path("sgx_quote_collateral.json").read_bytes())
    result = verify_dcap_quote(Path("sgx_quote").read_bytes(), collateral, now=1752919277)
    print(result.status, result.advisory_ids, result.report_body.mr_enclave.hex())
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import json
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import dcap_qvl
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sgx_iot.errors import FormatError, UsageError, VerificationError
from sgx_iot.sgx.dcap_quote import DcapQuote, QuoteHeader
from sgx_iot.sgx.detect import describe
from sgx_iot.sgx.report import ReportBody
from sgx_iot.verify.roots import fingerprint_sha256

QuoteCollateralV3 = dcap_qvl.QuoteCollateralV3
MAX_COLLATERAL_BYTES = 1024 * 1024
FETCH_TIMEOUT_SECONDS = 30.0
INTEL_ROOT = "Intel SGX Root CA (built into dcap-qvl)"
MAX_UNIX_TIME = 1 << 64
"""dcap-qvl takes the verification time as an unsigned 64-bit integer."""

T = TypeVar("T")

# dcap-qvl reports failures as text; the first code whose phrases occur in it wins (specific phrases first).
_ERROR_CODES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("DEBUG_ENCLAVE", ("debug mode is enabled",)),
    ("TCB_REVOKED", ("tcb status is invalid: revoked",)),
    ("CERTIFICATE_REVOKED", ("certrevoked", "certificate revoked")),
    ("UNTRUSTED_ROOT", ("unknownissuer", "failed to load root ca", "root ca certificate",
                        "root ca crl: invalidcrlsignature", "root ca crl: unsupportedcrlsignaturealgorithm")),
    ("COLLATERAL_NOT_YET_VALID", ("issue date is in the future",)),
    ("COLLATERAL_EXPIRED", ("tcbinfo expired", "qe identity expired", "collateral expired", "crlexpired",
                            "revocation list expired", "crl is not valid after")),
    ("CERTIFICATE_NOT_YET_VALID", ("certnotvalidyet", "not valid before", "not valid yet")),
    ("CERTIFICATE_EXPIRED", ("certexpired", "certificate expired", "certificate is not valid after")),
    ("QUOTE_BAD_SIGNATURE", ("isv enclave report signature",)),
    ("QE_REPORT_DATA_MISMATCH", ("qe report hash mismatch",)),
    ("QE_REPORT_BAD_SIGNATURE", ("signature is invalid for qe_report", "qe report signature")),
    ("COLLATERAL_BAD_SIGNATURE", ("signature is invalid for tcb", "signature is invalid for qe")),
    ("QE_IDENTITY_MISMATCH", ("qe mrsigner", "qe isvprodid", "qe attributes", "qe miscselect",
                              "qe report validation")),
    ("COLLATERAL_MISMATCH", ("fmspc mismatch", "tcb info in the collateral")),
    ("TCB_LEVEL_NOT_FOUND", ("tcb level",)),
    ("CERTIFICATE_CHAIN_INVALID", ("certificate chain", "chain is too short", "invalidsignatureforpublickey",
                                   "pck certificate")),
)
# Failures that mean "this input cannot be used" rather than "this evidence is not genuine".
_QUOTE_FORMAT_ERRORS = ("failed to decode quote", "failed to parse quote", "quote version", "quote must have version",
                        "attestation key type", "pck cert format", "certification data type", "unsupported tee type",
                        "failed to get signed quote")
_COLLATERAL_FORMAT_ERRORS = ("failed to decode tcbinfo", "failed to decode qeidentity", "should be valid json",
                             "must be valid hex", "failed to parse next update", "failed to parse tcb info",
                             "failed to parse qe identity", "failed to decode hex")


@dataclass(frozen=True)
class DcapVerification:
    """A quote that ``dcap-qvl`` verified, with the TCB status and advisories it reported (not judged here)."""

    quote: DcapQuote
    status: str
    advisory_ids: tuple[str, ...]
    qe_status: str | None
    qe_advisory_ids: tuple[str, ...]
    ppid: bytes
    root: str
    """``INTEL_ROOT`` or ``"sha256:<fingerprint>"`` of the root given."""
    now: int

    @property
    def header(self) -> QuoteHeader:
        """The quote header (version, attestation key type, QE/PCE SVN, QE vendor)."""
        return self.quote.header

    @property
    def report_body(self) -> ReportBody:
        """The attested enclave's report body (MRENCLAVE, MRSIGNER, ISVPRODID, ISVSVN, attributes, REPORTDATA)."""
        return self.quote.report_body

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (bytes as hex)."""
        return {
            "status": self.status,
            "advisory_ids": list(self.advisory_ids),
            "qe_status": self.qe_status,
            "qe_advisory_ids": list(self.qe_advisory_ids),
            "ppid": self.ppid.hex(),
            "root": self.root,
            "now": self.now,
            "header": describe(self.header),
            "enclave": describe(self.report_body),
        }


def verify_dcap_quote(
    quote: bytes,
    collateral: QuoteCollateralV3 | str | bytes | dict[str, Any],
    *,
    root_ca_der: bytes | None = None,
    now: int,
) -> DcapVerification:
    """Verify ``quote`` with ``collateral`` at Unix time ``now``, against Intel's root or ``root_ca_der``.

    Raises ``FormatError`` for a malformed quote, collateral or root, ``UsageError`` for a ``now`` outside
    ``[0, 2**64)`` and
    ``VerificationError`` (codes: QUOTE_BAD_SIGNATURE, UNTRUSTED_ROOT, COLLATERAL_EXPIRED,
    COLLATERAL_NOT_YET_VALID, CERTIFICATE_EXPIRED, TCB_REVOKED, DEBUG_ENCLAVE, QE_IDENTITY_MISMATCH, …, and
    QUOTE_INVALID for anything else ``dcap-qvl`` refuses) when the evidence is not genuine or not current.
    """
    if isinstance(now, bool) or not isinstance(now, int) or not 0 <= now < MAX_UNIX_TIME:
        raise UsageError(f"the verification time must be a Unix time in seconds from 0 to 2**64 - 1, got {now!r}")
    parsed = DcapQuote.parse(quote)
    if not isinstance(collateral, QuoteCollateralV3):
        collateral = load_collateral(collateral)
    try:
        if root_ca_der is None:
            result = dcap_qvl.verify(quote, collateral, now)
            root = INTEL_ROOT
        else:
            root = "sha256:" + _root_fingerprint(root_ca_der)
            result = dcap_qvl.verify_with_root_ca(quote, collateral, root_ca_der, now)
    except ValueError as exc:
        raise _map_error(str(exc)) from None
    claims = json.loads(result.to_json())
    qe = claims.get("qe_status") or {}
    return DcapVerification(
        quote=parsed,
        status=result.status,
        advisory_ids=tuple(result.advisory_ids),
        qe_status=qe.get("status"),
        qe_advisory_ids=tuple(qe.get("advisory_ids") or ()),
        ppid=bytes(result.ppid),
        root=root,
        now=now,
    )


def load_collateral(data: str | bytes | dict[str, Any]) -> QuoteCollateralV3:
    """``QuoteCollateralV3`` from its JSON (as ``QuoteCollateralV3.to_json()`` writes it); ``FormatError`` if bad."""
    if isinstance(data, dict):
        data = json.dumps(data)
    if len(data) > MAX_COLLATERAL_BYTES:
        raise FormatError("QuoteCollateralV3", "document", None, f"larger than {MAX_COLLATERAL_BYTES} bytes")
    if isinstance(data, bytes):
        try:
            data = data.decode()
        except UnicodeDecodeError as exc:
            raise FormatError("QuoteCollateralV3", "document", exc.start, "not UTF-8 text") from None
    try:
        return QuoteCollateralV3.from_json(data)
    except (ValueError, TypeError) as exc:
        raise FormatError("QuoteCollateralV3", "document", None, _reason(str(exc))) from None


def load_root_ca(data: bytes) -> bytes:
    """A root CA certificate given as PEM or DER → its DER bytes (``FormatError`` if it is neither)."""
    try:
        cert = x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise FormatError("RootCA", "certificate", None, f"not a PEM or DER X.509 certificate ({exc})") from None
    return cert.public_bytes(serialization.Encoding.DER)


def fetch_collateral(pccs_url: str, quote: bytes, *, timeout: float = FETCH_TIMEOUT_SECONDS) -> QuoteCollateralV3:
    """Fetch the collateral for ``quote`` from a PCCS/PCS (``{pccs_url}/sgx/certification/v4/...``; plain http works).

    Raises ``FormatError`` for a malformed quote and ``VerificationError("COLLATERAL_UNAVAILABLE")`` when the
    service cannot be reached or refuses. Blocking; safe to call from inside a running event loop.
    """
    DcapQuote.parse(quote)

    async def fetch() -> QuoteCollateralV3:
        return await asyncio.wait_for(dcap_qvl.get_collateral(pccs_url, quote), timeout)

    try:
        return _run_blocking(fetch)
    except (ValueError, RuntimeError, TimeoutError) as exc:
        reason = _reason(str(exc)) or "timed out"
        raise VerificationError(
            "COLLATERAL_UNAVAILABLE", f"could not fetch collateral from {pccs_url}: {reason}"
        ) from None


def _run_blocking(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def _map_error(message: str) -> Exception:
    reason = _reason(message)
    lowered = reason.lower()
    if any(phrase in lowered for phrase in _QUOTE_FORMAT_ERRORS):
        return FormatError("DcapQuote", "quote", None, reason)
    if any(phrase in lowered for phrase in _COLLATERAL_FORMAT_ERRORS):
        return FormatError("QuoteCollateralV3", "document", None, reason)
    code = next((c for c, phrases in _ERROR_CODES if any(p in lowered for p in phrases)), "QUOTE_INVALID")
    advice = _ADVICE.get(code, "")
    return VerificationError(code, f"dcap-qvl refused the quote: {_readable_times(reason)}{advice}")


# What a person can do about the refusals that are about time, not about the evidence.
_ADVICE = {
    "COLLATERAL_EXPIRED": "; fetch fresh collateral (e.g. from a PCCS), or verify archived evidence at its own time "
                          "with --now",
    "COLLATERAL_NOT_YET_VALID": "; check this machine's clock, or the --now given",
    "CERTIFICATE_EXPIRED": "; verify archived evidence at its own time with --now",
}


def _readable_times(reason: str) -> str:
    """dcap-qvl prints times as ``UnixTime(1775215317)``; show them as UTC dates a person can read."""

    def iso(match: re.Match[str]) -> str:
        try:
            moment = datetime.datetime.fromtimestamp(int(match.group(1)), datetime.UTC)
        except (OverflowError, OSError, ValueError):
            return match.group(0)
        return moment.strftime("%Y-%m-%d %H:%M:%S UTC")

    return re.sub(r"UnixTime\((\d+)\)", iso, reason)


def _reason(message: str) -> str:
    """One line from dcap-qvl's multi-line error ("Verification failed: X\\n\\nCaused by:\\n    Y" → "X: Y")."""
    message = message.removeprefix("Verification failed: ")
    parts = [p.strip() for p in re.split(r"\n\s*Caused by:\s*", message) if p.strip()]
    return ": ".join(" ".join(p.split()) for p in parts)


def _root_fingerprint(root_ca_der: bytes) -> str:
    try:
        return fingerprint_sha256(x509.load_der_x509_certificate(root_ca_der))
    except ValueError as exc:
        raise FormatError("RootCA", "certificate", None, f"not a DER X.509 certificate ({exc})") from None
