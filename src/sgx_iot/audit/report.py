"""The reproducibility report: does the enclave that produced the evidence come from the trusted source?

It lines up, for each identity field, every value that some party states — the build from source, the signed
enclave's SIGSTRUCT, the replay of the signed enclave's metadata, the enclave configuration XML, the attestation
evidence — and says whether they agree. On top: the SIGSTRUCT signature, the attributes (debug), the bytes where a
rebuilt SDK enclave differs from the signed one outside the metadata note, the configuration XML fields that
disagree with the measured metadata, whether the evidence is authentic, and what its REPORTDATA is worth.

The report is truthy only when everything matches (``bool(report)``); :meth:`ReproducibilityReport.problems`
says what did not, one sentence each; :meth:`ReproducibilityReport.to_dict` is the JSON form. Text rendering lives
in the command line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sgx_iot.sgx.attributes import AttributeFlags, Attributes

#: Who states a value, in the order reports show them.
SOURCE = "source"
"""Built from the trusted source (sgx-iot image, or the signed metadata replayed over the rebuilt SDK enclave)."""
SIGSTRUCT = "sigstruct"
"""The signed enclave's SIGSTRUCT (what EINIT enforces)."""
REPLAYED = "replayed"
"""The signed SDK enclave's metadata replayed over the signed file itself."""
CONFIG = "config"
"""The enclave configuration (``Enclave.config.xml``, or sgx-iot's enclave configuration)."""
EVIDENCE = "evidence"
"""The attestation evidence (IAS report, DCAP quote, or sgx-iot evidence bundle)."""
_ORDER = (SOURCE, SIGSTRUCT, REPLAYED, CONFIG, EVIDENCE)

_INIT = int(AttributeFlags.INIT)


@dataclass(frozen=True)
class Comparison:
    """One identity field (``name``) as stated by each party; parties that state nothing are absent.

    ``matches`` when every stated value is equal; ``required`` names parties that must be present for it to
    match at all (MRENCLAVE needs the source and the SIGSTRUCT: without them nothing was compared).
    """

    name: str
    values: Mapping[str, bytes | int | bool]
    required: tuple[str, ...] = ()

    @property
    def matches(self) -> bool:
        """True when all required parties are present and all stated values are equal."""
        if any(party not in self.values for party in self.required):
            return False
        return len(set(self.values.values())) <= 1

    @property
    def missing(self) -> tuple[str, ...]:
        """Required parties that stated nothing."""
        return tuple(party for party in self.required if party not in self.values)

    def get(self, party: str) -> bytes | int | bool | None:
        """The value ``party`` states, or ``None``."""
        return self.values.get(party)

    def ordered(self) -> list[tuple[str, bytes | int | bool]]:
        """``(party, value)`` pairs in report order."""
        return [(p, self.values[p]) for p in _ORDER if p in self.values] + [
            (p, v) for p, v in self.values.items() if p not in _ORDER
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: values as hex (bytes) or numbers, plus ``matches``."""
        return {"matches": self.matches, "values": {p: _json_value(v) for p, v in self.ordered()},
                "missing": list(self.missing)}


@dataclass(frozen=True)
class AttributesCheck:
    """The enclave attributes: what the SIGSTRUCT imposes (under its mask) versus what the evidence shows.

    EINIT compares ``SECS.ATTRIBUTES & mask`` with ``SIGSTRUCT.ATTRIBUTES & mask`` before it sets INIT, so INIT is
    ignored on the evidence side. ``debug_allowed`` is whether the SIGSTRUCT lets the enclave run in debug mode
    (DEBUG not in the mask, or required); ``config_allows_debug`` is the configuration's ``DisableDebug == 0``.
    """

    sigstruct: Attributes
    mask: Attributes
    evidence: Attributes | None = None
    config_allows_debug: bool | None = None

    @property
    def debug_allowed(self) -> bool:
        """True when the SIGSTRUCT permits a debug launch."""
        return not self.mask.debug or self.sigstruct.debug

    @property
    def evidence_debug(self) -> bool | None:
        """The evidence enclave's DEBUG bit, or ``None`` without evidence."""
        return None if self.evidence is None else self.evidence.debug

    @property
    def matches(self) -> bool:
        """The evidence's attributes satisfy the SIGSTRUCT under its mask, and debug is allowed where used."""
        if self.evidence is None:
            return True
        seen = Attributes(self.evidence.flags & ~_INIT, self.evidence.xfrm)
        if (seen & self.mask) != (self.sigstruct & self.mask):
            return False
        return not (self.evidence.debug and self.config_allows_debug is False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "matches": self.matches,
            "sigstruct": _attributes(self.sigstruct),
            "mask": _attributes(self.mask, names=False),
            "evidence": _attributes(self.evidence) if self.evidence is not None else None,
            "debug_allowed_by_sigstruct": self.debug_allowed,
            "debug_allowed_by_config": self.config_allows_debug,
            "evidence_debug": self.evidence_debug,
        }


@dataclass(frozen=True)
class FileDifference:
    """A range where the rebuilt enclave differs from the signed one, outside the metadata note."""

    file_offset: int
    length: int
    section: str | None = None
    section_offset: int | None = None

    def describe(self) -> str:
        """``"section .text + 0x1a0 (file offset 0x11a0, 1 byte)"`` (or ``"ELF header + 0x18 (…)"``)."""
        if self.section is None or self.section_offset is None:
            where = "outside any section"
        elif self.section.startswith("."):
            where = f"section {self.section} + {self.section_offset:#x}"
        else:
            where = f"{self.section} + {self.section_offset:#x}"
        plural = "byte" if self.length == 1 else "bytes"
        return f"{where} (file offset {self.file_offset:#x}, {self.length} {plural})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"file_offset": self.file_offset, "length": self.length, "section": self.section,
                "section_offset": self.section_offset}


@dataclass(frozen=True)
class ConfigMismatch:
    """A field of the configuration XML that the measured metadata contradicts."""

    field: str
    config: Any
    metadata: Any

    def describe(self) -> str:
        """``"TCSNum: configuration says 10, metadata says 1"``."""
        return f"{self.field}: configuration says {_show(self.config)}, metadata says {_show(self.metadata)}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"field": self.field, "config": _json_value(self.config), "metadata": _json_value(self.metadata)}


@dataclass(frozen=True)
class EvidenceSummary:
    """What was checked about the attestation evidence and with which outcome.

    ``verified`` is True when its signatures (and chain, and collateral when given) verify; ``error`` is the
    ``CODE: sentence`` of the first failure otherwise. ``status`` is the IAS quote status or the DCAP TCB status —
    reported, not judged (judging it is the verifier policy's job).
    """

    kind: str
    verified: bool
    error: str | None = None
    status: str | None = None
    advisory_ids: tuple[str, ...] = ()
    checks: str = ""
    platform: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"kind": self.kind, "verified": self.verified, "error": self.error, "status": self.status,
                "advisory_ids": list(self.advisory_ids), "checks": self.checks, "platform": self.platform}


@dataclass(frozen=True)
class ReportDataSummary:
    """The evidence's REPORTDATA and what it binds.

    ``binding`` is ``"legacy"`` (a raw P-256 key, x‖y little-endian halves, as the original gateway wrote it),
    ``"sgx-iot"`` (SHA-256(SPKI ‖ nonce) ‖ 0³², checked against the evidence bundle's key and nonce), or ``None``
    when REPORTDATA binds nothing recognisable. ``public_key`` is the bound key as a SEC1 uncompressed point.
    ``binding_ok`` is False only when an sgx-iot binding was checked and failed.
    """

    value: bytes
    binding: str | None = None
    public_key: bytes | None = None
    binding_ok: bool = True

    def to_dict(self, trusted: bool) -> dict[str, Any]:
        """JSON-ready; ``trusted`` is the report's verdict on whether the value can be trusted."""
        return {"value": self.value.hex(), "trusted": trusted, "binding": self.binding,
                "public_key": self.public_key.hex() if self.public_key is not None else None,
                "binding_ok": self.binding_ok}


@dataclass(frozen=True)
class ReproducibilityReport:
    """Everything an auditor established about one enclave (see the module docstring)."""

    kind: str
    mrenclave: Comparison
    mrsigner: Comparison
    isv_prod_id: Comparison
    isv_svn: Comparison
    attributes: AttributesCheck
    sigstruct_signature_ok: bool
    sigstruct_error: str | None = None
    source: Mapping[str, Any] | None = None
    evidence: EvidenceSummary | None = None
    report_data: ReportDataSummary | None = None
    differences: tuple[FileDifference, ...] = ()
    differences_truncated: bool = False
    config_mismatches: tuple[ConfigMismatch, ...] = ()
    extra_problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    def problems(self) -> list[str]:
        """One sentence per failed check, in report order (empty when everything matches)."""
        out: list[str] = []
        for comparison in (self.mrenclave, self.mrsigner, self.isv_prod_id, self.isv_svn):
            if comparison.missing:
                out.append(f"{comparison.name}: no value from {', '.join(comparison.missing)}, so nothing was compared")
            elif not comparison.matches:
                stated = ", ".join(f"{p} {_show(v)}" for p, v in comparison.ordered())
                out.append(f"{comparison.name} differs: {stated}")
        if not self.sigstruct_signature_ok:
            out.append(f"the SIGSTRUCT signature is not valid ({self.sigstruct_error}); EINIT would refuse it")
        if not self.attributes.matches:
            out.append("the evidence's attributes are not what the SIGSTRUCT allows"
                       if not (self.attributes.evidence_debug and self.attributes.config_allows_debug is False)
                       else "the evidence comes from a debug enclave but the configuration disables debug")
        if self.differences:
            count = f"{len(self.differences)}{'+' if self.differences_truncated else ''}"
            shown = "; ".join(d.describe() for d in self.differences[:3])
            more = ", …" if len(self.differences) > 3 else ""
            out.append(f"the rebuilt enclave differs from the signed one outside the metadata note in {count} "
                       f"range(s): {shown}{more}")
        for mismatch in self.config_mismatches:
            out.append(f"configuration XML disagrees with the metadata: {mismatch.describe()}")
        if self.evidence is not None and not self.evidence.verified:
            out.append(f"the {self.evidence.kind} evidence did not verify: {self.evidence.error}")
        if self.report_data is not None and not self.report_data.binding_ok:
            out.append("REPORTDATA does not bind the evidence's public key and nonce")
        out.extend(self.extra_problems)
        return out

    def __bool__(self) -> bool:
        """True only when every check passed."""
        return not self.problems()

    @property
    def report_data_trusted(self) -> bool:
        """Whether the evidence's REPORTDATA can be trusted: authentic evidence of the audited enclave, launched
        in production mode (a debug enclave's memory is readable and writable by the host, so the host could
        have chosen its REPORTDATA)."""
        return (self.report_data is not None and self.evidence is not None and bool(self)
                and not self.attributes.evidence_debug)

    @property
    def report_data_untrusted_reason(self) -> str | None:
        """Why the REPORTDATA cannot be trusted (None when it can, or when there is none)."""
        if self.report_data is None or self.report_data_trusted:
            return None
        if self.evidence is None:
            return "there is no attestation evidence"
        if not self:
            return "the reproducibility check failed"
        return "the evidence comes from a DEBUG enclave, whose memory the host can read and modify"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (bytes as lowercase hex)."""
        return {
            "format": "sgx-iot-reproducibility-report/1",
            "ok": bool(self),
            "kind": self.kind,
            "source": dict(self.source) if self.source is not None else None,
            "mrenclave": self.mrenclave.to_dict(),
            "mrsigner": self.mrsigner.to_dict(),
            "isv_prod_id": self.isv_prod_id.to_dict(),
            "isv_svn": self.isv_svn.to_dict(),
            "attributes": self.attributes.to_dict(),
            "sigstruct_signature": {"valid": self.sigstruct_signature_ok, "error": self.sigstruct_error},
            "differences_outside_metadata": [d.to_dict() for d in self.differences],
            "differences_truncated": self.differences_truncated,
            "config_mismatches": [m.to_dict() for m in self.config_mismatches],
            "evidence": self.evidence.to_dict() if self.evidence is not None else None,
            "report_data": ({**self.report_data.to_dict(self.report_data_trusted),
                             "untrusted_reason": self.report_data_untrusted_reason} if self.report_data else None),
            "problems": self.problems(),
            "notes": list(self.notes),
        }


def _attributes(value: Attributes, *, names: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"flags": f"0x{value.flags:x}", "xfrm": f"0x{value.xfrm:x}"}
    if names:
        out["names"] = value.flag_names()
    return out


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    return value


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
