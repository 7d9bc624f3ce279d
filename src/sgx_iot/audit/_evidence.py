"""Reading the attestation evidence an auditor is given: an IAS report, a DCAP quote, or an sgx-iot evidence bundle.

Each becomes the attested enclave's report body, an :class:`EvidenceSummary` (authentic or not, and why), and a
:class:`ReportDataSummary` (what REPORTDATA binds). Evidence that does not parse is a ``FormatError`` (exit 2);
evidence that parses but is not authentic is recorded in the summary, so the report can show everything else.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot.audit._quote import verify_quote_signatures
from sgx_iot.audit.report import EvidenceSummary, ReportDataSummary
from sgx_iot.errors import FormatError, UsageError, VerificationError
from sgx_iot.sgx.dcap_quote import DcapQuote
from sgx_iot.sgx.keybinding import check_key_binding, legacy_public_key
from sgx_iot.sgx.report import ReportBody
from sgx_iot.verify.dcap import load_root_ca, verify_dcap_quote
from sgx_iot.verify.evidence import Evidence
from sgx_iot.verify.ias import IasReport, verify_ias_report
from sgx_iot.verify.policy import intel_sgx_root_ca_der


@dataclass(frozen=True)
class ReadEvidence:
    """The evidence's enclave report body and what was established about it."""

    body: ReportBody
    summary: EvidenceSummary
    report_data: ReportDataSummary
    notes: tuple[str, ...] = ()


def read_ias_report(data: bytes) -> ReadEvidence:
    """An IAS attestation verification report (bare body or stored ``{"body", "headers"}`` form)."""
    report = IasReport.parse(data)
    error = _attempt(lambda: verify_ias_report(report))
    summary = EvidenceSummary(
        kind="IAS report", verified=error is None, error=error, status=report.isv_enclave_quote_status,
        advisory_ids=report.advisory_ids,
        checks="IAS signature under the pinned Attestation Report Signing CA, valid at the report's timestamp",
        platform="SGX hardware (EPID)",
    )
    notes = (f"IAS report of {report.timestamp.isoformat()}; quote status {report.isv_enclave_quote_status} is "
             "reported, not judged (that is the verifier policy's job)",)
    body = report.quote.report_body
    return ReadEvidence(body, summary, _legacy_report_data(body.report_data), notes)


def read_quote(quote: bytes, collateral: Any = None, *, root_ca: bytes | None = None, now: int | None = None,
               platform: str | None = None, kind: str = "DCAP quote") -> ReadEvidence:
    """A DCAP quote v3: verified with dcap-qvl when ``collateral`` is given, else by signatures and chain only."""
    parsed = DcapQuote.parse(quote)
    now = int(time.time()) if now is None else now
    root_der = load_root_ca(root_ca) if root_ca is not None else None
    notes: list[str] = []
    status: str | None = None
    advisories: tuple[str, ...] = ()
    root_name = "the given root" if root_der is not None else "Intel's SGX Root CA"
    if collateral is not None:
        result: list[Any] = []
        error = _attempt(lambda: result.append(verify_dcap_quote(quote, collateral, root_ca_der=root_der, now=now)))
        if result:
            status, advisories = result[0].status, result[0].advisory_ids
        checks = f"dcap-qvl with collateral at {now}, chain to {root_name}"
        notes.append("the TCB status is reported, not judged (that is the verifier policy's job)")
    else:
        error = _attempt(lambda: verify_quote_signatures(parsed, root_der or intel_sgx_root_ca_der(), now=now))
        checks = f"quote, QE report and PCK chain signatures to {root_name} (no collateral: TCB status not evaluated)"
        notes.append("no collateral was given: the quote's signatures and chain were checked, its TCB status was not")
    summary = EvidenceSummary(kind, error is None, error, status, advisories, checks, platform)
    return ReadEvidence(parsed.report_body, summary, _legacy_report_data(parsed.report_body.report_data), tuple(notes))


def read_evidence_bundle(data: bytes, collateral: Any = None, *, root_ca: bytes | None = None,
                         now: int | None = None) -> ReadEvidence:
    """An sgx-iot evidence bundle: its quote, and REPORTDATA checked against its public key and nonce."""
    try:
        evidence = Evidence.from_json(data)
    except RecursionError:  # json's own error for deep nesting, which Evidence.from_json lets through
        raise FormatError("evidence", "(document)", None, "not JSON: nested too deeply") from None
    read = read_quote(evidence.quote, collateral if collateral is not None else evidence.collateral,
                      root_ca=root_ca, now=now, platform=evidence.platform, kind="sgx-iot evidence")
    try:
        key = serialization.load_pem_public_key(evidence.public_key_pem.encode())
    except ValueError:
        raise FormatError("evidence", "public_key", None, "not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise FormatError("evidence", "public_key", None, "not a P-256 public key")
    binding_ok = _attempt(lambda: check_key_binding(read.body.report_data, key, evidence.nonce)) is None
    point = key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    notes = read.notes
    if evidence.platform == "simulated":
        notes += ("the evidence comes from the simulated platform: it proves nothing about real hardware",)
    return ReadEvidence(read.body, read.summary, ReportDataSummary(read.body.report_data, "sgx-iot", point,
                                                                    binding_ok), notes)


def read_any(*, ias_report: bytes | None, quote: bytes | None, evidence: bytes | None, collateral: Any,
             root_ca: bytes | None, now: int | None) -> ReadEvidence | None:
    """Whichever evidence was given (at most one), or ``None``."""
    offered = (("an IAS report", ias_report), ("a quote", quote), ("an evidence bundle", evidence))
    given = [name for name, value in offered if value is not None]
    if len(given) > 1:
        raise UsageError(f"give one piece of evidence, not {' and '.join(given)}")
    if collateral is not None and quote is None and evidence is None:
        raise UsageError("collateral goes with a DCAP quote or an evidence bundle")
    if ias_report is not None:
        return read_ias_report(ias_report)
    if quote is not None:
        return read_quote(quote, collateral, root_ca=root_ca, now=now)
    if evidence is not None:
        return read_evidence_bundle(evidence, collateral, root_ca=root_ca, now=now)
    return None


def _legacy_report_data(report_data: bytes) -> ReportDataSummary:
    """REPORTDATA that is a raw P-256 key (the original gateway's x‖y, little-endian halves), else unbound."""
    try:
        key = legacy_public_key(report_data)
    except FormatError:
        return ReportDataSummary(report_data)
    point = key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return ReportDataSummary(report_data, "legacy", point)


def _attempt(check: Any) -> str | None:
    """Run ``check``; return ``None`` when it passes, ``"CODE: sentence"`` when it raises ``VerificationError``."""
    try:
        check()
    except VerificationError as exc:
        return str(exc)
    return None
