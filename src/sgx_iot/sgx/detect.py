"""Recognise what an SGX artefact is (for ``sgx-iot inspect``) and describe any parsed structure as named fields.

:func:`detect` looks at the bytes only (the name is used in messages): a DCAP quote v3, an EPID quote (full, or
its 432-byte body), an IAS report JSON (bare body or the stored ``{"body", "headers"}`` form), a SIGSTRUCT, an
Intel SGX SDK enclave ELF (signed or unsigned), a sealed blob, a REPORT, a TARGETINFO or a key request. Sizes and
magic values decide where they can; the fixed-size structures without a magic (REPORT, TARGETINFO, key request)
are recognised by their reserved bytes being zero, so an arbitrary 432- or 512-byte file is not mistaken for one.
Anything else raises :class:`FormatError`.

:func:`describe` turns a parsed structure into nested plain data (bytes → hex, attribute flags → names,
certificates → subject/issuer/validity) for text and ``--json`` output.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import enum
import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding

from sgx_iot.errors import FormatError, SgxIotError
from sgx_iot.sgx.attributes import AttributeFlags, Attributes
from sgx_iot.sgx.dcap_quote import CertificationData, DcapQuote
from sgx_iot.sgx.epid_quote import EpidQuote
from sgx_iot.sgx.keyrequest import KeyName, KeyRequest, key_name_label, key_policy_names
from sgx_iot.sgx.report import Report, TargetInfo
from sgx_iot.sgx.sealed import HEADER_SIZE as SEALED_HEADER_SIZE
from sgx_iot.sgx.sealed import SealedData
from sgx_iot.sgx.sigstruct import SIGSTRUCT_HEADER, Sigstruct

DCAP_QUOTE = "dcap-quote"
EPID_QUOTE = "epid-quote"
EPID_QUOTE_BODY = "epid-quote-body"
IAS_REPORT = "ias-report"
SIGSTRUCT = "sigstruct"
SDK_ENCLAVE = "sdk-enclave"
SEALED_DATA = "sealed-data"
REPORT = "report"
TARGET_INFO = "target-info"
KEY_REQUEST = "key-request"

TITLES = {
    DCAP_QUOTE: "DCAP quote v3 (ECDSA-P256)",
    EPID_QUOTE: "EPID quote (sgx_quote_t)",
    EPID_QUOTE_BODY: "EPID quote body (first 432 bytes of sgx_quote_t)",
    IAS_REPORT: "IAS attestation verification report (EPID)",
    SIGSTRUCT: "SIGSTRUCT (enclave signature structure)",
    SDK_ENCLAVE: "Intel SGX SDK enclave (ELF)",
    SEALED_DATA: "sealed data (sgx_sealed_data_t)",
    REPORT: "REPORT (sgx_report_t)",
    TARGET_INFO: "TARGETINFO (sgx_target_info_t)",
    KEY_REQUEST: "key request (sgx_key_request_t)",
}

_MAX_JSON_BYTES = 1024 * 1024


@dataclass(frozen=True)
class IasReportDocument:
    """An IAS report JSON as recognised here (no signature check: that is ``sgx_iot.verify.ias``)."""

    body: dict[str, Any]
    headers: dict[str, Any] | None
    quote: EpidQuote
    """The decoded ``isvEnclaveQuoteBody``."""


@dataclass(frozen=True)
class DetectedFile:
    """What :func:`detect` found: a stable ``kind`` (module constants), a title for people, the parsed object."""

    kind: str
    obj: Any
    name: str = ""

    @property
    def title(self) -> str:
        """Human-readable name of the kind."""
        return TITLES.get(self.kind, self.kind)


def detect(data: bytes, name: str = "") -> DetectedFile:
    """Recognise and parse ``data``; ``FormatError`` if it is none of the supported artefacts, or if it clearly is
    one (e.g. a DCAP quote header) but does not parse."""
    data = bytes(data)
    label = name or "input"
    if data[:4] == b"\x7fELF":
        from sgx_iot.sgx.sdk_enclave import SdkEnclave  # heavy (pyelftools); only for ELF input

        return DetectedFile(SDK_ENCLAVE, SdkEnclave.parse(data), name)
    if data.lstrip()[:1] == b"{":
        return DetectedFile(IAS_REPORT, _ias_document(data, label), name)
    if len(data) == Sigstruct.SIZE and data[:12] == SIGSTRUCT_HEADER[:12]:
        return DetectedFile(SIGSTRUCT, Sigstruct.parse(data), name)
    # before the quotes: a sealed blob starts with key_name 4, key_policy 2, which reads like "version 4, type 2"
    if _looks_like_sealed(data):
        return DetectedFile(SEALED_DATA, SealedData.parse(data), name)
    if len(data) >= 4:
        version, key_type = struct.unpack_from("<HH", data)
        if (version == 3 and key_type == 2) or (
            # later quote versions: report "unsupported version" rather than "unknown file" when the length fits
            version in (4, 5) and len(data) >= 436 and int.from_bytes(data[432:436], "little") == len(data) - 436
        ):
            return DetectedFile(DCAP_QUOTE, DcapQuote.parse(data), name)
        if _looks_like_epid(data, version, key_type):
            quote = EpidQuote.parse(data)
            return DetectedFile(EPID_QUOTE_BODY if quote.is_body_only else EPID_QUOTE, quote, name)
    if len(data) == Report.SIZE and _zero(data, (96, 128), (160, 192), (262, 304)):
        return DetectedFile(REPORT, Report.parse(data), name)
    if len(data) == KeyRequest.SIZE:
        if int.from_bytes(data[:2], "little") <= max(KeyName) and _zero(data, (6, 8), (78, 512)):
            return DetectedFile(KEY_REQUEST, KeyRequest.parse(data), name)
        if _zero(data, (56, 64), (128, 512)):
            return DetectedFile(TARGET_INFO, TargetInfo.parse(data), name)
    raise FormatError(
        "file",
        "content",
        None,
        f"{label} ({len(data)} bytes) is not a recognised SGX artefact (DCAP/EPID quote, IAS report, SIGSTRUCT, "
        "SDK enclave, sealed data, REPORT, TARGETINFO, key request)",
    )


def _zero(data: bytes, *ranges: tuple[int, int]) -> bool:
    return all(not any(data[a:b]) for a, b in ranges)


def _looks_like_epid(data: bytes, version: int, sign_type: int) -> bool:
    if version not in (1, 2) or sign_type not in (0, 1):
        return False
    if len(data) == EpidQuote.BODY_SIZE:
        # the inner report body's reserved fields (at 48 + 96 and 48 + 160) are zero in real quotes
        return _zero(data, (144, 176), (208, 240))
    if len(data) >= EpidQuote.BODY_SIZE + 4:
        return int.from_bytes(data[432:436], "little") == len(data) - 436
    return False


def _looks_like_sealed(data: bytes) -> bool:
    if len(data) < SEALED_HEADER_SIZE:
        return False
    plain_text_offset, payload_size = (int.from_bytes(data[o : o + 4], "little") for o in (512, 528))
    key_name = int.from_bytes(data[:2], "little")
    return payload_size == len(data) - SEALED_HEADER_SIZE and plain_text_offset <= payload_size and key_name <= 4


def _ias_document(data: bytes, label: str) -> IasReportDocument:
    structure = "IAS report"
    not_ias = FormatError("file", "content", None, f"{label} is JSON but not an IAS report (no isvEnclaveQuoteBody)")
    if len(data) > _MAX_JSON_BYTES:
        raise FormatError("file", "content", None, f"{label} is larger than {_MAX_JSON_BYTES} bytes of JSON")
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise FormatError("file", "content", None, f"{label} starts like JSON but is not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise not_ias
    headers = None
    body: Any = document
    if "isvEnclaveQuoteBody" not in document and "body" in document:
        body, headers = document["body"], document.get("headers")
        if isinstance(body, str):
            try:
                body = json.loads(body)
            except (ValueError, RecursionError):
                raise FormatError(structure, "body", None, "the stored body text is not JSON") from None
        if headers is not None and not isinstance(headers, dict):
            raise FormatError(structure, "headers", None, "expected a JSON object of HTTP headers")
    if not isinstance(body, dict) or "isvEnclaveQuoteBody" not in body:
        raise not_ias
    if not isinstance(body["isvEnclaveQuoteBody"], str):
        raise FormatError(structure, "isvEnclaveQuoteBody", None, "expected a base64 string")
    try:
        quote_body = base64.b64decode(body["isvEnclaveQuoteBody"], validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(structure, "isvEnclaveQuoteBody", None, "not valid base64") from None
    if len(quote_body) != EpidQuote.BODY_SIZE:
        raise FormatError(structure, "isvEnclaveQuoteBody", None, f"expected 432 bytes, got {len(quote_body)}")
    return IasReportDocument(body, headers, EpidQuote.parse(quote_body))


# --- describe -------------------------------------------------------------------------------------------------


def describe(obj: Any) -> Any:
    """Nested plain data (dict/list/str/int/bool/None) naming every field of ``obj``.

    Bytes become lowercase hex; ``Attributes`` show flags/xfrm in hex plus flag names; reserved fields appear
    only when non-zero; derived values are added where they help (MRSIGNER of a SIGSTRUCT, key policy names,
    certificate subjects, the quote's own signature checks).
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, enum.Enum):
        return obj.name
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).hex()
    if isinstance(obj, (datetime.datetime, datetime.date)):
        return obj.isoformat()
    if isinstance(obj, x509.Certificate):
        return _describe_certificate(obj)
    if isinstance(obj, Attributes):
        return {
            "flags": f"0x{obj.flags:016x}",
            "xfrm": f"0x{obj.xfrm:016x}",
            "flag_names": _compact_flag_names(obj),
            "debug": obj.debug,
        }
    if isinstance(obj, dict):
        return {str(k): describe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [describe(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = _describe_fields(obj)
        _add_derived(obj, out)
        return out
    return str(obj)


def _compact_flag_names(attributes: Attributes) -> list[str]:
    """Known flag names, then all unknown set bits as one hex value (a mask would otherwise list ~60 bits)."""
    known = [name for name in attributes.flag_names() if not name.startswith("0x")]
    unknown = attributes.flags & ~sum(int(flag) for flag in AttributeFlags)
    return known + ([f"0x{unknown:x}"] if unknown else [])


def _describe_fields(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if not f.repr:
            continue
        value = getattr(obj, f.name)
        if f.name.startswith("reserved") and isinstance(value, bytes) and not any(value):
            continue
        out[f.name] = describe(value)
    return out


def _add_derived(obj: Any, out: dict[str, Any]) -> None:
    if isinstance(obj, KeyRequest):
        out["key_name"] = {"value": obj.key_name, "name": key_name_label(obj.key_name)}
        out["key_policy"] = {"value": f"0x{obj.key_policy:04x}", "names": key_policy_names(obj.key_policy)}
        out["misc_mask"] = f"0x{obj.misc_mask:08x}"
    elif isinstance(obj, Sigstruct):
        out["date"] = obj.date_string()
        out["exponent"] = obj.exponent
        out["misc_select"] = f"0x{obj.misc_select:08x}"
        out["misc_mask"] = f"0x{obj.misc_mask:08x}"
        out["mrsigner"] = obj.mrsigner.hex()
        out["release_type"] = obj.release_type
        out["signature_check"] = _check(obj.verify)
    elif isinstance(obj, CertificationData):
        out["data_size"] = len(obj.data)
        if obj.cert_type == 5:
            try:
                out["certificates"] = [_describe_certificate(c) for c in obj.pem_chain()]
                out["data"] = obj.data.decode("ascii", "replace").rstrip("\x00")
            except FormatError as exc:
                out["certificates_error"] = str(exc)
    elif isinstance(obj, DcapQuote):
        out["signature_data_len"] = len(obj.signature_data.to_bytes())
        out["checks"] = _dcap_checks(obj)
    elif isinstance(obj, SealedData):
        out["encrypted_text_size"] = len(obj.encrypted_text)
        out["additional_mac_text"] = obj.additional_mac_text.hex()
        text = obj.additional_mac_text
        if text and all(32 <= b < 127 for b in text):
            out["additional_mac_text_ascii"] = text.decode("ascii")
    elif isinstance(obj, EpidQuote):
        out["body_only"] = obj.is_body_only
    _add_foreign_derived(obj, out)


def _add_foreign_derived(obj: Any, out: dict[str, Any]) -> None:
    """SDK enclave metadata (its module is imported only for ELF input, so it is matched by name here)."""
    kind = type(obj).__name__
    if kind == "SdkEnclave":
        out["signed"] = obj.signed
        out["file_size"] = len(obj.data)
        out["note_descriptor"] = {"offset": obj.note_range()[0], "size": obj.note_range()[1] - obj.note_range()[0]}
    elif kind == "Metadata":
        out["version"] = obj.version_string
        out["magic"] = f"0x{obj.magic:016x}"
        out["enclave_size"] = f"0x{obj.enclave_size:x}"
        out.pop("enclave_css", None)
        try:
            out["sigstruct"] = describe(obj.sigstruct)
        except SgxIotError as exc:
            out["sigstruct_error"] = str(exc)
        from sgx_iot.sgx.enclave_config import decode_metadata  # only reached for SDK enclaves

        try:
            out["configuration"] = decode_metadata(obj).to_dict()  # Enclave.config.xml element names
        except SgxIotError as exc:
            out["configuration_error"] = str(exc)
    elif kind in ("LayoutEntry", "LayoutGroup") and hasattr(obj, "name"):
        out["name"] = obj.name
        if kind == "LayoutEntry":
            out["si_flags"] = f"0x{obj.si_flags:x}"
            out["rva"] = f"0x{obj.rva:x}"


def _check(func: Any, *args: Any) -> str:
    try:
        func(*args)
    except SgxIotError as exc:
        return getattr(exc, "code", None) or str(exc)
    return "ok"


def _dcap_checks(quote: DcapQuote) -> dict[str, str]:
    checks = {
        "isv_signature": _check(quote.verify_isv_signature),
        "qe_report_binding": _check(quote.verify_qe_report_binding),
    }
    try:
        pck_key = quote.pck_chain()[0].public_key()
    except (FormatError, IndexError):
        checks["qe_report_signature"] = "no PCK certificate in the certification data"
    except (ValueError, UnsupportedAlgorithm) as exc:  # a key type or curve cryptography cannot load
        checks["qe_report_signature"] = f"the PCK certificate's public key is unusable ({exc})"
    else:
        checks["qe_report_signature"] = _check(quote.verify_qe_report_signature, pck_key)
    checks["note"] = "the quote's own signatures only; chain, collateral and TCB: `sgx-iot verify quote`"
    return checks


def _describe_certificate(cert: x509.Certificate) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:  # names are decoded lazily: a malformed one raises only now
        out.update(subject=cert.subject.rfc4514_string(), issuer=cert.issuer.rfc4514_string())
    except ValueError as exc:
        out["names_error"] = str(exc)
    out.update(serial=f"{cert.serial_number:x}", not_before=cert.not_valid_before_utc.isoformat(),
               not_after=cert.not_valid_after_utc.isoformat(),
               sha256=hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest())
    return out
