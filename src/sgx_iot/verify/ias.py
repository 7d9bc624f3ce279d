"""Intel Attestation Service (EPID) attestation verification reports: parse and verify (SGX_FORMATS §8.1).

IAS answered a quote with a JSON body signed by its "Attestation Report Signing" key (RSA-2048,
RSASSA-PKCS1-v1_5 / SHA-256 over the **exact body bytes**) and sent the signature and the certificate chain in HTTP
headers. Three input forms are accepted by :meth:`IasReport.parse`:

* the exact response body (then the headers come separately, e.g. from a JSON file of headers);
* the stored form ``{"body": {...}, "headers": {...}}`` of the original sgx-iot/auditee tools. Those tools
  re-serialized the body, so the signed bytes are rebuilt with ``json.dumps(body, separators=(",", ":"))``
  (key order kept), which reproduces them exactly for every real report;
* a bare body that was re-serialized the same way: :func:`verify_ias_report` then also tries its compact form.

IAS is end-of-life; its leaf certificate expired on 2026-11-20, so validity is checked at the report's own
``timestamp`` (which the signature covers), never at wall-clock time. The CA is pinned
(:func:`sgx_iot.verify.roots.ias_report_signing_ca`), never taken from the header. Quote statuses and advisories are
reported, not judged: judging them is the policy's job.

Example::

    report = IasReport.parse(Path("ias_report.json").read_bytes())
    result = verify_ias_report(report)          # raises VerificationError(code, sentence) when not authentic
    print(report.isv_enclave_quote_status, report.quote.report_body.mr_enclave.hex())
"""

from __future__ import annotations

import base64
import binascii
import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sgx_iot.errors import FormatError, VerificationError
from sgx_iot.sgx.epid_quote import EpidQuote
from sgx_iot.verify.roots import common_name, fingerprint_sha256, ias_report_signing_ca

SIGNATURE_HEADER = "X-IASReport-Signature"
CHAIN_HEADER = "X-IASReport-Signing-Certificate"
QUOTE_BODY_SIZE = 432
MAX_REPORT_BYTES = 1024 * 1024

_S = "IAS report"


@dataclass(frozen=True)
class IasReport:
    """One IAS attestation verification report, with the bytes IAS signed and what came in its headers."""

    id: str
    timestamp: datetime
    version: int
    isv_enclave_quote_status: str
    isv_enclave_quote_body: bytes
    quote: EpidQuote
    advisory_ids: tuple[str, ...]
    advisory_url: str | None
    nonce: str | None
    epid_pseudonym: bytes | None
    platform_info_blob: bytes | None
    signed_body: bytes
    signature: bytes | None
    signing_chain: tuple[x509.Certificate, ...]
    reencoded: bool
    """True when ``signed_body`` was rebuilt from a re-serialized (stored) body."""

    @classmethod
    def parse(cls, data: bytes, headers: bytes | Mapping[str, Any] | None = None) -> IasReport:
        """Parse a bare body or the stored ``{"body", "headers"}`` form; ``headers`` (JSON bytes or a mapping of
        HTTP headers) overrides any headers stored with the body. Raises only ``FormatError``."""
        if len(data) > MAX_REPORT_BYTES:
            raise FormatError(_S, "document", None, f"larger than {MAX_REPORT_BYTES} bytes")
        document = _load_json(data, "document")
        if not isinstance(document, dict):
            raise FormatError(_S, "document", 0, "expected a JSON object")
        stored_headers: Any = None
        reencoded = False
        if "body" in document and "isvEnclaveQuoteBody" not in document:
            extra = set(document) - {"body", "headers"}
            if extra:
                raise FormatError(_S, "document", None, f"unexpected fields beside body/headers: {sorted(extra)}")
            raw_body = document["body"]
            stored_headers = document.get("headers")
            if isinstance(raw_body, str):  # the body kept verbatim as text: those are the signed bytes
                try:
                    signed_body = raw_body.encode()
                except UnicodeEncodeError:
                    raise FormatError(_S, "body", None, "the body text is not valid Unicode") from None
                body = _load_json(signed_body, "body")
            elif isinstance(raw_body, dict):
                signed_body = json.dumps(raw_body, separators=(",", ":")).encode()
                body, reencoded = raw_body, True
            else:
                raise FormatError(_S, "body", None, "expected a JSON object or the body text")
        else:
            body, signed_body = document, data
        if headers is not None:
            stored_headers = _load_json(headers, "headers") if isinstance(headers, bytes) else headers
        signature, chain = _parse_headers(stored_headers)
        return cls._from_body(body, signed_body, signature, chain, reencoded)

    @classmethod
    def _from_body(
        cls,
        body: Any,
        signed_body: bytes,
        signature: bytes | None,
        chain: tuple[x509.Certificate, ...],
        reencoded: bool,
    ) -> IasReport:
        if not isinstance(body, dict):
            raise FormatError(_S, "body", 0, "expected a JSON object")
        quote_body = _b64(_field(body, "isvEnclaveQuoteBody", str), "isvEnclaveQuoteBody")
        if len(quote_body) != QUOTE_BODY_SIZE:
            raise FormatError(
                _S, "isvEnclaveQuoteBody", None, f"expected {QUOTE_BODY_SIZE} bytes, got {len(quote_body)}"
            )
        advisory_ids = _field(body, "advisoryIDs", list, required=False) or []
        if not all(isinstance(a, str) for a in advisory_ids):
            raise FormatError(_S, "advisoryIDs", None, "expected a list of strings")
        pseudonym = _field(body, "epidPseudonym", str, required=False)
        blob = _field(body, "platformInfoBlob", str, required=False)
        try:
            platform_info_blob = bytes.fromhex(blob) if blob is not None else None
        except ValueError:
            raise FormatError(_S, "platformInfoBlob", None, "not hexadecimal") from None
        return cls(
            id=_field(body, "id", str),
            timestamp=_timestamp(_field(body, "timestamp", str)),
            version=_field(body, "version", int),
            isv_enclave_quote_status=_field(body, "isvEnclaveQuoteStatus", str),
            isv_enclave_quote_body=quote_body,
            quote=EpidQuote.parse(quote_body),
            advisory_ids=tuple(advisory_ids),
            advisory_url=_field(body, "advisoryURL", str, required=False),
            nonce=_field(body, "nonce", str, required=False),
            epid_pseudonym=_b64(pseudonym, "epidPseudonym") if pseudonym is not None else None,
            platform_info_blob=platform_info_blob,
            signed_body=signed_body,
            signature=signature,
            signing_chain=chain,
            reencoded=reencoded,
        )


@dataclass(frozen=True)
class IasVerification:
    """What :func:`verify_ias_report` established: the report is authentic (all fields of ``report`` are Intel's)."""

    report: IasReport
    leaf_subject: str
    leaf_sha256: str
    ca_sha256: str
    signed_bytes: bytes
    """The exact bytes the signature verified over (the compact re-encoding for stored bodies)."""

    @property
    def reencoded(self) -> bool:
        """Whether the signed bytes were rebuilt (compact JSON re-encoding) rather than given verbatim."""
        return self.signed_bytes != self.report.signed_body or self.report.reencoded


def verify_ias_report(report: IasReport, *, ca: x509.Certificate | None = None) -> IasVerification:
    """Check that Intel's report-signing key signed ``report``, under the pinned CA (or ``ca``).

    Checks, in order: a signature and a leaf certificate are present (``IAS_MISSING_SIGNATURE``); the header's CA,
    if any, is the pinned one and the leaf is issued and signed by it (``IAS_UNTRUSTED_CHAIN``); leaf and CA are
    valid at the report's ``timestamp`` (``IAS_CERT_NOT_VALID_AT_TIMESTAMP``); RSASSA-PKCS1-v1_5/SHA-256 over the
    exact body bytes (``IAS_BAD_SIGNATURE``). Does not judge the quote status or advisories.
    """
    ca = ca or ias_report_signing_ca()
    if report.signature is None:
        raise VerificationError("IAS_MISSING_SIGNATURE", f"the report has no {SIGNATURE_HEADER}; give its headers")
    if not report.signing_chain:
        raise VerificationError("IAS_MISSING_SIGNATURE", f"the report has no {CHAIN_HEADER}; give its headers")
    leaf, *rest = report.signing_chain
    if any(cert != ca for cert in rest):
        raise VerificationError(
            "IAS_UNTRUSTED_CHAIN",
            f"the signing chain's CA is not the pinned {common_name(ca)!r} (SHA-256 {fingerprint_sha256(ca)})",
        )
    try:
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise VerificationError(
            "IAS_UNTRUSTED_CHAIN",
            f"the signing certificate {common_name(leaf)!r} is not issued by the pinned {common_name(ca)!r}: {exc}",
        ) from None
    for cert in (leaf, ca):
        if not cert.not_valid_before_utc <= report.timestamp <= cert.not_valid_after_utc:
            raise VerificationError(
                "IAS_CERT_NOT_VALID_AT_TIMESTAMP",
                f"{common_name(cert)!r} is valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} to "
                f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, not at the report's timestamp "
                f"{report.timestamp.isoformat()}",
            )
    key = leaf.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise VerificationError("IAS_UNTRUSTED_CHAIN", f"the signing certificate {common_name(leaf)!r} has no RSA key")
    for candidate in _signed_candidates(report):
        try:
            key.verify(report.signature, candidate, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            continue
        return IasVerification(report, leaf.subject.rfc4514_string(), fingerprint_sha256(leaf), fingerprint_sha256(ca),
                               candidate)
    raise VerificationError(
        "IAS_BAD_SIGNATURE",
        "the IAS signature does not verify over the report body: the body was altered or is not Intel's",
    )


def _signed_candidates(report: IasReport) -> list[bytes]:
    """The exact body, then (for a bare body that was re-serialized) its compact re-encoding."""
    candidates = [report.signed_body]
    if not report.reencoded:
        try:
            compact = json.dumps(json.loads(report.signed_body), separators=(",", ":")).encode()
        except ValueError:
            return candidates
        if compact != report.signed_body:
            candidates.append(compact)
    return candidates


def _parse_headers(headers: Any) -> tuple[bytes | None, tuple[x509.Certificate, ...]]:
    if headers is None:
        return None, ()
    if not isinstance(headers, Mapping):
        raise FormatError(_S, "headers", None, "expected a JSON object of HTTP headers")
    by_name = {str(k).lower(): v for k, v in headers.items()}
    signature_text = by_name.get(SIGNATURE_HEADER.lower())
    chain_text = by_name.get(CHAIN_HEADER.lower())
    signature = None
    if signature_text is not None:
        if not isinstance(signature_text, str):
            raise FormatError(_S, SIGNATURE_HEADER, None, "expected a base64 string")
        signature = _b64(signature_text, SIGNATURE_HEADER)
    chain: tuple[x509.Certificate, ...] = ()
    if chain_text is not None:
        if not isinstance(chain_text, str):
            raise FormatError(_S, CHAIN_HEADER, None, "expected a URL-encoded PEM chain")
        try:
            chain = tuple(x509.load_pem_x509_certificates(urllib.parse.unquote(chain_text).encode()))
        except ValueError as exc:
            raise FormatError(_S, CHAIN_HEADER, None, f"not a PEM certificate chain ({exc})") from None
    return signature, chain


def _load_json(data: bytes, field: str) -> Any:
    try:
        return json.loads(data)
    except UnicodeDecodeError as exc:
        raise FormatError(_S, field, exc.start, "not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise FormatError(_S, field, exc.pos, f"not JSON ({exc.msg})") from None
    except (ValueError, RecursionError) as exc:
        raise FormatError(_S, field, None, f"not JSON ({exc})") from None


def _field(body: dict[str, Any], name: str, kind: type, *, required: bool = True) -> Any:
    value = body.get(name)
    if value is None:
        if required:
            raise FormatError(_S, name, None, "missing")
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise FormatError(_S, name, None, f"expected {kind.__name__}, got {type(value).__name__}")
    return value


def _b64(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(_S, field, None, "not base64") from None


def _timestamp(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text)
        # IAS writes UTC without an offset; an offset that moves the time out of datetime's range overflows
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise FormatError(_S, "timestamp", None, f"not an ISO 8601 time: {text[:40]!r}") from None
