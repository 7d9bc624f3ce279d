"""An Intel SGX SDK enclave's configuration (``Enclave.config.xml``), read from XML or decoded from its metadata.

The sign tool turns the XML into the metadata's layout table and SIGSTRUCT (linux-sgx
``sdk/sign_tool/SignTool/manage_metadata.cpp``), and all of that is measured; decoding it back lets an auditor
check that a signed enclave was built with the configuration its authors published (``SGX_FORMATS.md`` §2.5):

* heap: HeapMinSize = HEAP_MIN pages, HeapInitSize = + HEAP_INIT pages, HeapMaxSize = + HEAP_MAX pages;
* stack (of the first thread): StackMinSize = STACK_MIN pages, StackMaxSize = STACK_MAX + STACK_MIN pages;
* threads: TCSNum = static TCS entries counted through the groups; TCSMaxNum = TCSNum without dynamic threads,
  else #TCS_DYN + min(TCSMinPool, TCSNum − 1); TCSMinPool and TCSPolicy are stored as given;
* SIGSTRUCT: ProdID, ISVSVN, MiscSelect, MiscMask; DisableDebug ⇔ DEBUG set in ATTRIBUTEMASK; ProvisionKey,
  LaunchKey and EnableKSS from ATTRIBUTES; ReleaseType from bit 31 of the header's type; IntelSigned ⇔ vendor 0x8086.
"""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from sgx_iot.errors import FormatError
from sgx_iot.sgx.attributes import AttributeFlags
from sgx_iot.sgx.sdk_metadata import LayoutId, Metadata

PAGE_SIZE = 4096
MAX_XML_BYTES = 1 << 16
_STRUCTURE = "EnclaveConfig"
_NUMBER = re.compile(r"(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")

# XML element → (dataclass field, largest value the sign tool accepts)
_ELEMENTS: dict[str, tuple[str, int]] = {
    "ProdID": ("prod_id", 0xFFFF),
    "ISVSVN": ("isv_svn", 0xFFFF),
    "TCSNum": ("tcs_num", 0xFFFFFFFF),
    "TCSMaxNum": ("tcs_max_num", 0xFFFFFFFF),
    "TCSMinPool": ("tcs_min_pool", 0xFFFFFFFF),
    "TCSPolicy": ("tcs_policy", 1),
    "StackMaxSize": ("stack_max_size", (1 << 64) - 1),
    "StackMinSize": ("stack_min_size", (1 << 64) - 1),
    "HeapMaxSize": ("heap_max_size", (1 << 64) - 1),
    "HeapInitSize": ("heap_init_size", (1 << 64) - 1),
    "HeapMinSize": ("heap_min_size", (1 << 64) - 1),
    "DisableDebug": ("disable_debug", 1),
    "MiscSelect": ("misc_select", 0xFFFFFFFF),
    "MiscMask": ("misc_mask", 0xFFFFFFFF),
    "ProvisionKey": ("provision_key", 1),
    "LaunchKey": ("launch_key", 1),
    "EnableKSS": ("enable_kss", 1),
    "ReleaseType": ("release_type", 1),
    "IntelSigned": ("intel_signed", 1),
    "HW": ("hw", 0xFFFFFFFF),
}
_FIELD_TO_ELEMENT = {name: element for element, (name, _) in _ELEMENTS.items()}


@dataclass(frozen=True)
class EnclaveConfig:
    """Configuration values; ``None`` means absent from the XML (or not recoverable from metadata).

    ``extra`` keeps XML elements this module does not interpret (newer SDK options), so a caller can say they
    were not checked.
    """

    prod_id: int | None = None
    isv_svn: int | None = None
    tcs_num: int | None = None
    tcs_max_num: int | None = None
    tcs_min_pool: int | None = None
    tcs_policy: int | None = None
    stack_max_size: int | None = None
    stack_min_size: int | None = None
    heap_max_size: int | None = None
    heap_init_size: int | None = None
    heap_min_size: int | None = None
    disable_debug: int | None = None
    misc_select: int | None = None
    misc_mask: int | None = None
    provision_key: int | None = None
    launch_key: int | None = None
    enable_kss: int | None = None
    release_type: int | None = None
    intel_signed: int | None = None
    hw: int | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, int]:
        """The present values keyed by their XML element names (for JSON output)."""
        return {
            _FIELD_TO_ELEMENT[f.name]: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "extra" and getattr(self, f.name) is not None
        }


@dataclass(frozen=True)
class Mismatch:
    """A published configuration value that the signed enclave does not have."""

    element: str
    published: int
    decoded: int

    def __str__(self) -> str:
        return f"{self.element}: published {self.published:#x} but the signed enclave has {self.decoded:#x}"


def parse_xml(text: bytes) -> EnclaveConfig:
    """Parse an ``Enclave.config.xml`` (``<EnclaveConfiguration>`` with one element per option).

    Values follow the sign tool (``strtoull(text, 0)``): decimal, ``0x`` hexadecimal, or octal with a leading 0.
    Refused with ``FormatError``: malformed XML, DTDs/entities (never needed, and a way to attack parsers), a
    different root, attributes, nested elements, repeated elements, non-numbers, values out of range.
    Unknown elements are kept in ``extra``.
    """
    if len(text) > MAX_XML_BYTES:
        raise FormatError(_STRUCTURE, "xml", None, f"{len(text)} bytes is too large for an enclave configuration")
    if b"<!DOCTYPE" in text.upper() or b"<!ENTITY" in text.upper():
        raise FormatError(_STRUCTURE, "xml", text.upper().find(b"<!"), "DTDs and entity declarations are not allowed")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        line, column = exc.position
        raise FormatError(_STRUCTURE, "xml", None, f"not well-formed XML (line {line}, column {column})") from None
    except (ValueError, UnicodeError) as exc:
        raise FormatError(_STRUCTURE, "xml", None, f"unreadable XML ({exc})") from None
    if root.tag != "EnclaveConfiguration":
        raise FormatError(_STRUCTURE, "root", None, f"root element is <{root.tag}>, not <EnclaveConfiguration>")
    if root.attrib or (root.text or "").strip():
        raise FormatError(_STRUCTURE, "EnclaveConfiguration", None, "the root may hold only option elements")
    values: dict[str, int] = {}
    extra: dict[str, str] = {}
    for element in root:
        name = element.tag
        if not isinstance(name, str):
            continue  # comments and processing instructions
        if element.attrib or len(element):
            raise FormatError(_STRUCTURE, name, None, "an option element may hold only a number")
        raw = (element.text or "").strip()
        if name in values or name in extra:
            raise FormatError(_STRUCTURE, name, None, "the option is given twice")
        if name not in _ELEMENTS:
            extra[name] = raw
            continue
        attribute, maximum = _ELEMENTS[name]
        if not _NUMBER.fullmatch(raw):
            raise FormatError(_STRUCTURE, name, None, f"{raw[:40]!r} is not a decimal, 0x-hex or octal number")
        value = int(raw, 0) if not (raw.startswith("0") and raw[1:2].isdigit()) else int(raw, 8)
        if value > maximum:
            raise FormatError(_STRUCTURE, name, None, f"{value:#x} exceeds the largest allowed value {maximum:#x}")
        values[name] = value
    return EnclaveConfig(**{_ELEMENTS[k][0]: v for k, v in values.items()}, extra=extra)


def decode_metadata(metadata: Metadata) -> EnclaveConfig:
    """Recover the configuration the sign tool was given from one metadata blob (rules in the module docstring).

    Raises ``FormatError`` for metadata older than 1.4, whose layout IDs had other meanings.
    """
    if metadata.version[0] % 10 == 1 and metadata.version[1] < 4 or metadata.version[0] % 10 == 0:
        raise FormatError("Metadata", "version", 8, f"metadata {metadata.version_string} predates the layout IDs "
                          "this decoder knows (1.4 and later)")
    placed = metadata.placed_layout()

    def pages(layout_id: LayoutId) -> int:
        return sum(p.entry.page_count for p in placed if p.entry.id == layout_id)

    def first_pages(layout_id: LayoutId) -> int:
        return next((p.entry.page_count for p in placed if p.entry.id == layout_id), 0)

    tcs_num = sum(1 for p in placed if p.entry.id == LayoutId.TCS)
    tcs_dyn = sum(1 for p in placed if p.entry.id == LayoutId.TCS_DYN)
    tcs_max = tcs_dyn + min(metadata.tcs_min_pool, max(tcs_num - 1, 0)) if tcs_dyn else tcs_num
    heap_min = pages(LayoutId.HEAP_MIN) * PAGE_SIZE
    heap_init = heap_min + pages(LayoutId.HEAP_INIT) * PAGE_SIZE
    stack_min = first_pages(LayoutId.STACK_MIN) * PAGE_SIZE
    css = metadata.sigstruct
    return EnclaveConfig(
        prod_id=css.isv_prod_id,
        isv_svn=css.isv_svn,
        tcs_num=tcs_num,
        tcs_max_num=tcs_max,
        tcs_min_pool=metadata.tcs_min_pool,
        tcs_policy=metadata.tcs_policy,
        stack_max_size=stack_min + first_pages(LayoutId.STACK_MAX) * PAGE_SIZE,
        stack_min_size=stack_min,
        heap_max_size=heap_init + pages(LayoutId.HEAP_MAX) * PAGE_SIZE,
        heap_init_size=heap_init,
        heap_min_size=heap_min,
        disable_debug=1 if css.attribute_mask.flags & AttributeFlags.DEBUG else 0,
        misc_select=css.misc_select,
        misc_mask=css.misc_mask,
        provision_key=1 if css.attributes.flags & AttributeFlags.PROVISIONKEY else 0,
        launch_key=1 if css.attributes.flags & AttributeFlags.EINITTOKEN_KEY else 0,
        enable_kss=1 if css.attributes.flags & AttributeFlags.KSS else 0,
        release_type=1 if css.release_type else 0,
        intel_signed=1 if css.vendor == 0x8086 else 0,
        hw=css.swdefined,
    )


def compare(published: EnclaveConfig, decoded: EnclaveConfig) -> list[Mismatch]:
    """Values present in ``published`` that differ in ``decoded`` (absent ones fall back to SDK defaults: skipped)."""
    mismatches = []
    for f in dataclasses.fields(EnclaveConfig):
        if f.name == "extra":
            continue
        want, have = getattr(published, f.name), getattr(decoded, f.name)
        if want is not None and have is not None and want != have:
            mismatches.append(Mismatch(_FIELD_TO_ELEMENT[f.name], want, have))
    return mismatches


def unchecked(published: EnclaveConfig) -> list[str]:
    """Elements of ``published`` that :func:`compare` cannot check (unknown to this decoder)."""
    return sorted(published.extra)
