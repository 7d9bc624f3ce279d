"""The original sgx-iot gateway's evidence, checked end to end (behind ``sgx-iot verify ias-report``).

The seed's gateway enclave put its P-256 public key in REPORTDATA (x‖y, little-endian halves), got an EPID quote
verified by Intel's IAS, and signed sensor data with the key. Given the archived IAS report and, optionally, the
signed enclave and a data file with its detached signature, :func:`verify_legacy_gateway` lists every check:

* the IAS report signature (pinned CA, certificate valid at the report's timestamp);
* the quote status and advisories, and the debug bit — reported, not judged;
* with the signed enclave: its SIGSTRUCT signature, its metadata replay, and MRENCLAVE / MRSIGNER / ISVPRODID /
  ISVSVN of the quote against its SIGSTRUCT;
* the public key extracted from REPORTDATA, and the DER ECDSA-SHA256 signature of the data under it.

Example::

    verdict = verify_legacy_gateway(report_bytes, signed_enclave=so_bytes, data=data, signature=sig)
    for check in verdict.checks:
        print(check.outcome, check.name, check.sentence)
    assert verdict.ok
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot.errors import FormatError, UsageError, VerificationError
from sgx_iot.sgx.detect import describe
from sgx_iot.sgx.ecdsa import der_to_raw
from sgx_iot.sgx.keybinding import legacy_public_key
from sgx_iot.sgx.report import ReportBody
from sgx_iot.sgx.sdk_enclave import SdkEnclave
from sgx_iot.verify.ias import IasReport, IasVerification, verify_ias_report


class Outcome(enum.StrEnum):
    """``PASS``/``FAIL`` for authenticity and consistency checks; ``INFO`` for facts a policy judges later."""

    PASS = "pass"
    FAIL = "fail"
    INFO = "info"


@dataclass(frozen=True)
class Check:
    """One line of the verdict."""

    name: str
    outcome: Outcome
    sentence: str


@dataclass(frozen=True)
class LegacyVerdict:
    """Every check made on a legacy gateway's evidence; ``ok`` when none failed."""

    report: IasReport
    ias: IasVerification | None
    checks: tuple[Check, ...]
    public_key: ec.EllipticCurvePublicKey | None

    @property
    def ok(self) -> bool:
        """True when no check failed (INFO lines, such as a GROUP_OUT_OF_DATE status, do not count)."""
        return all(check.outcome is not Outcome.FAIL for check in self.checks)

    @property
    def public_key_pem(self) -> str | None:
        """The extracted public key as a PEM SubjectPublicKeyInfo."""
        if self.public_key is None:
            return None
        pem = self.public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        return pem.decode()

    @property
    def public_key_sec1_hex(self) -> str | None:
        """The extracted public key as an uncompressed SEC1 point ``04‖x‖y`` in hex."""
        if self.public_key is None:
            return None
        return self.public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        ).hex()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (bytes as hex)."""
        report = self.report
        return {
            "ok": self.ok,
            "checks": [{"name": c.name, "outcome": c.outcome.value, "sentence": c.sentence} for c in self.checks],
            "report": {
                "id": report.id,
                "timestamp": report.timestamp.isoformat(),
                "isv_enclave_quote_status": report.isv_enclave_quote_status,
                "advisory_ids": list(report.advisory_ids),
                "advisory_url": report.advisory_url,
                "signed_bytes": len(self.ias.signed_bytes) if self.ias else None,
                "reencoded": self.ias.reencoded if self.ias else report.reencoded,
            },
            "enclave": describe(self.report.quote.report_body),
            "public_key": {"pem": self.public_key_pem, "sec1": self.public_key_sec1_hex},
        }


def verify_legacy_gateway(
    ias_report: bytes,
    *,
    headers: bytes | None = None,
    signed_enclave: bytes | None = None,
    data: bytes | None = None,
    signature: bytes | None = None,
    ca: x509.Certificate | None = None,
) -> LegacyVerdict:
    """Check a legacy gateway's IAS report and, when given, its signed enclave and a signed data file.

    Raises ``FormatError`` when an input does not parse (report, headers, enclave file) and ``UsageError`` when
    only one of ``data``/``signature`` is given; every other problem is a failed :class:`Check` in the verdict.
    """
    if (data is None) != (signature is None):
        raise UsageError("the data file and its signature go together: give both or neither")
    report = IasReport.parse(ias_report, headers)
    enclave = SdkEnclave.parse(signed_enclave) if signed_enclave is not None else None
    checks: list[Check] = []
    ias = _check_ias(report, ca, checks)
    body = report.quote.report_body
    checks.append(_status(report))
    checks.append(_debug(body))
    if enclave is not None:
        checks.extend(_enclave_checks(body, enclave))
    public_key = _extract_key(body, checks)
    if data is not None and signature is not None:
        checks.append(_data_signature(public_key, data, signature))
    return LegacyVerdict(report, ias, tuple(checks), public_key)


def _check_ias(report: IasReport, ca: x509.Certificate | None, checks: list[Check]) -> IasVerification | None:
    try:
        ias = verify_ias_report(report, ca=ca)
    except VerificationError as exc:
        checks.append(Check("IAS signature", Outcome.FAIL, f"{exc}; nothing below is vouched for by Intel"))
        return None
    how = " (stored body re-encoded compactly)" if ias.reencoded else ""
    checks.append(
        Check(
            "IAS signature",
            Outcome.PASS,
            f"signed by Intel's report-signing key{how}, whose certificate chains to the pinned CA "
            f"{ias.ca_sha256[:16]}… and was valid at the report's timestamp {report.timestamp.isoformat()}",
        )
    )
    return ias


def _status(report: IasReport) -> Check:
    advisories = ", ".join(report.advisory_ids) or "none"
    return Check(
        "quote status",
        Outcome.INFO,
        f"{report.isv_enclave_quote_status}, advisories: {advisories} (reported, not judged; a policy decides)",
    )


def _debug(body: ReportBody) -> Check:
    flags = f"ATTRIBUTES.FLAGS 0x{body.attributes.flags:x}"
    if body.attributes.debug:
        return Check("debug", Outcome.INFO, f"DEBUG enclave ({flags}): its memory is readable, not for production")
    return Check("debug", Outcome.INFO, f"production enclave ({flags}, DEBUG not set)")


def _enclave_checks(body: ReportBody, enclave: SdkEnclave) -> list[Check]:
    sigstruct = enclave.sigstruct
    checks = []
    try:
        sigstruct.verify()
        checks.append(Check("SIGSTRUCT signature", Outcome.PASS, "its RSA-3072 signature and Q1/Q2 verify"))
    except VerificationError as exc:
        checks.append(Check("SIGSTRUCT signature", Outcome.FAIL, str(exc)))
    try:
        measured = enclave.measure()
    except FormatError as exc:
        checks.append(Check("MRENCLAVE replay", Outcome.FAIL, f"the metadata could not be replayed: {exc}"))
    else:
        wrong = [m for m in measured if not m.matches]
        if wrong:
            checks.append(
                Check(
                    "MRENCLAVE replay",
                    Outcome.FAIL,
                    f"replaying metadata blob {wrong[0].index} (version {wrong[0].version}) gives "
                    f"{wrong[0].mrenclave.hex()}, not the SIGSTRUCT's {wrong[0].enclave_hash.hex()}",
                )
            )
        else:
            checks.append(
                Check(
                    "MRENCLAVE replay",
                    Outcome.PASS,
                    f"replaying the enclave file's {len(measured)} metadata blob(s) gives SIGSTRUCT.ENCLAVEHASH",
                )
            )
    checks.append(_same("MRENCLAVE", body.mr_enclave.hex(), sigstruct.enclave_hash.hex(), "SIGSTRUCT.ENCLAVEHASH"))
    checks.append(_same("MRSIGNER", body.mr_signer.hex(), sigstruct.mrsigner.hex(), "SHA-256(SIGSTRUCT.MODULUS)"))
    checks.append(_same("ISVPRODID", str(body.isv_prod_id), str(sigstruct.isv_prod_id), "SIGSTRUCT.ISVPRODID"))
    checks.append(_same("ISVSVN", str(body.isv_svn), str(sigstruct.isv_svn), "SIGSTRUCT.ISVSVN"))
    return checks


def _same(name: str, quoted: str, expected: str, source: str) -> Check:
    if quoted == expected:
        return Check(name, Outcome.PASS, f"the quote's {name} {quoted} equals the signed enclave's {source}")
    return Check(
        name,
        Outcome.FAIL,
        f"the quote's {name} {quoted} differs from the signed enclave's {source} {expected}: "
        "the enclave that produced the report is not this signed file",
    )


def _extract_key(body: ReportBody, checks: list[Check]) -> ec.EllipticCurvePublicKey | None:
    try:
        key = legacy_public_key(body.report_data)
    except FormatError:
        checks.append(
            Check("public key", Outcome.FAIL, "REPORTDATA is not a P-256 public key (x‖y, little-endian halves)")
        )
        return None
    sec1 = key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint).hex()
    checks.append(Check("public key", Outcome.PASS, f"REPORTDATA holds the P-256 public key {sec1}"))
    return key


def _data_signature(key: ec.EllipticCurvePublicKey | None, data: bytes, signature: bytes) -> Check:
    if key is None:
        return Check("data signature", Outcome.FAIL, "no attested public key to check the data signature with")
    try:
        der_to_raw(signature)  # cryptography would report a malformed signature as merely "invalid"
    except FormatError:
        return Check("data signature", Outcome.FAIL, "the signature file is not a DER ECDSA signature")
    try:
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return Check(
            "data signature",
            Outcome.FAIL,
            f"the signature does not verify over the {len(data)}-byte data file with the attested key "
            "(other data, or signed by another key)",
        )
    return Check(
        "data signature",
        Outcome.PASS,
        f"the ECDSA-SHA256 signature verifies over the {len(data)}-byte data file with the attested key",
    )
