"""Intel SGX SDK enclave files (``enclave.so`` / ``enclave.signed.so``): metadata, MRENCLAVE replay, comparison.

:func:`replay` recomputes MRENCLAVE exactly as the SDK's sign tool does (``SGX_FORMATS.md`` §2.4, linux-sgx
``psw/urts/loader.cpp CLoader::build_image`` driven by the sign tool's measuring enclave creator): ECREATE,
metadata patches applied to a copy of the file, every PT_LOAD segment page by page, then the heap / stack / TCS /
SSA layout with its thread groups. It works over the signed file or over an unsigned build of it, since the
sign tool writes nothing but the note descriptor (§2.1). Features no public enclave uses and this module does
not reproduce (ELRANGE, FIPS extend entries, unknown metadata versions) raise :class:`FormatError` instead of
giving a possibly wrong answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sgx_iot.errors import FormatError
from sgx_iot.sgx._sdk_elf import ElfFacts, LoadSegment, read_elf, relocation_pages
from sgx_iot.sgx.measure import PAGE_SIZE, Measurement, SecInfoFlags
from sgx_iot.sgx.sdk_metadata import Metadata, PageAttr, parse_metadata_blobs
from sgx_iot.sgx.sigstruct import Sigstruct

__all__ = ["BlobMeasurement", "Difference", "SdkEnclave", "compare_outside_metadata", "replay"]

_ZERO_PAGE = bytes(PAGE_SIZE)
_MASK64 = (1 << 64) - 1
_TCS_OSSA, _TCS_OFS_BASE, _TCS_OGS_BASE = 16, 48, 56
_STRUCTURE = "SdkEnclave"


@dataclass(frozen=True)
class BlobMeasurement:
    """The replayed MRENCLAVE of one metadata blob next to the ENCLAVEHASH its SIGSTRUCT claims."""

    index: int
    version: str
    mrenclave: bytes
    enclave_hash: bytes

    @property
    def matches(self) -> bool:
        """True when the replay equals SIGSTRUCT.ENCLAVEHASH."""
        return self.mrenclave == self.enclave_hash


@dataclass(frozen=True)
class SdkEnclave:
    """A parsed SDK enclave file. ``metadata`` is empty for an unsigned build (all-zero descriptor)."""

    data: bytes = field(repr=False)
    elf: ElfFacts = field(repr=False)
    metadata: list[Metadata]

    @classmethod
    def parse(cls, data: bytes) -> SdkEnclave:
        """Read the ELF and every metadata blob of ``.note.sgxmeta``; ``FormatError`` for anything else."""
        data = bytes(data)
        elf = read_elf(data)
        descriptor = data[elf.note_offset : elf.note_offset + elf.note_size]
        blobs = parse_metadata_blobs(descriptor)
        if not blobs and any(descriptor):
            raise FormatError("Metadata", "magic_num", elf.note_offset,
                              "the .note.sgxmeta descriptor is neither signed metadata nor all zero")
        return cls(data, elf, blobs)

    @property
    def signed(self) -> bool:
        """True when the note holds at least one metadata blob (``sgx_sign`` has run)."""
        return bool(self.metadata)

    @property
    def sigstruct(self) -> Sigstruct:
        """The SIGSTRUCT of the first metadata blob (all blobs carry the same one)."""
        if not self.metadata:
            raise FormatError(_STRUCTURE, ".note.sgxmeta", self.elf.note_offset,
                              "the enclave is not signed: its metadata descriptor is all zero")
        return self.metadata[0].sigstruct

    def note_range(self) -> tuple[int, int]:
        """``(start, end)`` file offsets of the metadata descriptor (what ``sgx_sign`` writes)."""
        return self.elf.note_offset, self.elf.note_offset + self.elf.note_size

    def measure(self) -> list[BlobMeasurement]:
        """Replay every metadata blob over this file, each next to its SIGSTRUCT.ENCLAVEHASH."""
        return [
            BlobMeasurement(i, m.version_string, replay(m, self.data), m.enclave_hash)
            for i, m in enumerate(self.metadata)
        ]


def replay(metadata: Metadata, image_bytes: bytes) -> bytes:
    """MRENCLAVE of the enclave file ``image_bytes`` loaded with ``metadata`` (see the module docstring).

    ``image_bytes`` may be the signed file the metadata came from or an unsigned build of it. Memory use is the
    file size plus a few pages, whatever the enclave size.
    """
    _check_supported(metadata)
    elf = read_elf(image_bytes)
    reloc = relocation_pages(elf, image_bytes)  # read before patching, as the loader does
    image = bytearray(image_bytes)
    for i, patch in enumerate(metadata.patches):
        if patch.dst + patch.size > len(image):
            raise FormatError("Metadata", f"patches[{i}].dst", None,
                              f"patch [{patch.dst:#x}, +{patch.size:#x}) lies outside the {len(image)}-byte file")
        image[patch.dst : patch.dst + patch.size] = metadata.content(patch.src, patch.size)
    measurement = Measurement()
    measurement.ecreate(metadata.ssa_frame_size, metadata.enclave_size)
    _build_sections(measurement, metadata, elf.segments, memoryview(image), reloc)
    _build_contexts(measurement, metadata)
    return measurement.digest()


def _check_supported(metadata: Metadata) -> None:
    major, minor = metadata.version
    if metadata.uses_elrange:
        raise FormatError("Metadata", "version", 8, f"metadata {major}.{minor} places the enclave in an ELRANGE, "
                          "which this replay does not support")
    if metadata.extend_entries:
        raise FormatError("Metadata", "dirs[3]", None, "the metadata has extend entries (FIPS-certified OpenSSL "
                          "module), which this replay does not support")
    if not (major == 1 and minor >= 3 or major in (2, 3)):
        raise FormatError("Metadata", "version", 8, f"metadata version {major}.{minor} is not one this replay knows "
                          "(1.3 … 1.x, 2.x, 3.x)")


def _build_sections(
    measurement: Measurement, metadata: Metadata, segments: tuple[LoadSegment, ...], image: memoryview,
    reloc: frozenset[int],
) -> None:
    """PT_LOAD segments in program-header order (``CLoader::build_sections``)."""
    quirk = metadata.version == (1, 3)  # SDK 1.5-era metadata: an extra zero page after the top segment
    top: LoadSegment | None = None
    max_rva = 0
    for segment in segments:
        if segment.si_flags == SecInfoFlags.PT_REG:
            raise FormatError(_STRUCTURE, f"phdr[{segment.index}].p_flags", None,
                              "a PT_LOAD segment without R, W or X permission cannot be loaded")
        if quirk and top is not None and _needs_quirk_page(top):
            if _round(top.vaddr + top.memsz) < _trim(segment.vaddr):
                measurement.add_page(_round(top.vaddr + top.memsz), top.si_flags, _ZERO_PAGE)
        if segment.vaddr > max_rva:
            max_rva, top = segment.vaddr, segment
        raw = image[segment.offset : segment.offset + segment.filesz]
        _build_mem_region(measurement, raw, segment.vaddr, segment.memsz, segment.si_flags, reloc)
    if quirk and top is not None and _needs_quirk_page(top):
        measurement.add_page(_round(top.vaddr + top.memsz), top.si_flags, _ZERO_PAGE)


def _needs_quirk_page(top: LoadSegment) -> bool:
    return _round(top.memsz + top.vaddr) < _round(_round(top.memsz) + top.vaddr)


def _round(value: int) -> int:
    return (value + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def _trim(value: int) -> int:
    return value & ~(PAGE_SIZE - 1)


def _build_mem_region(
    measurement: Measurement, raw: memoryview | bytes, rva: int, virtual_size: int, flags: int, reloc: frozenset[int]
) -> None:
    """One region: file bytes page by page (partial pages zero-filled), then zero pages up to ``virtual_size``."""
    offset = 0
    if not raw and rva % PAGE_SIZE:
        raise FormatError(_STRUCTURE, "phdr", None, f"a region with no file bytes starts at unaligned {rva:#x}")
    while offset < len(raw):
        address = rva + offset
        in_page = address % PAGE_SIZE
        size = min(PAGE_SIZE - in_page, len(raw) - offset)
        page_flags = flags
        if address >> 12 in reloc and not flags & SecInfoFlags.W:
            page_flags = flags | SecInfoFlags.W
        if size == PAGE_SIZE:
            page = bytes(raw[offset : offset + PAGE_SIZE])
        else:
            page = bytes(in_page) + bytes(raw[offset : offset + size]) + bytes(PAGE_SIZE - in_page - size)
        measurement.add_page(address - in_page, page_flags, page)
        offset += PAGE_SIZE - in_page
    if virtual_size > offset:
        count = _round(virtual_size - offset) // PAGE_SIZE
        measurement.add_pages(rva + offset, count, flags, _ZERO_PAGE)


def _build_contexts(measurement: Measurement, metadata: Metadata) -> None:
    """Heap, stacks, TCS, SSA, TD… from the layout table, groups expanded (``CLoader::build_context``)."""
    for placed in metadata.placed_layout():
        entry, rva = placed.entry, placed.rva
        if not entry.attributes & PageAttr.EADD:
            continue  # guard pages, POST_ADD-only (EDMM) regions
        extend = entry.attributes & (PageAttr.EADD | PageAttr.EEXTEND) == PageAttr.EADD | PageAttr.EEXTEND
        if entry.content_offset:
            content = metadata.content(entry.content_offset, entry.content_size)
            if entry.si_flags == SecInfoFlags.PT_TCS:
                if len(content) > PAGE_SIZE:
                    raise FormatError("Metadata", "layout.content_size", None, "a TCS template exceeds one page")
                page = bytearray(PAGE_SIZE)
                page[: len(content)] = content
                for field_offset in (_TCS_OSSA, _TCS_OFS_BASE, _TCS_OGS_BASE):
                    value = int.from_bytes(page[field_offset : field_offset + 8], "little")
                    page[field_offset : field_offset + 8] = ((value + rva) & _MASK64).to_bytes(8, "little")
                measurement.add_pages(rva, entry.page_count, entry.si_flags, bytes(page), extend=extend)
            else:
                _build_mem_region(measurement, content, rva, entry.page_count * PAGE_SIZE, entry.si_flags, frozenset())
        elif entry.si_flags:
            page = entry.content_size.to_bytes(4, "little") * (PAGE_SIZE // 4) if entry.content_size else _ZERO_PAGE
            measurement.add_pages(rva, entry.page_count, entry.si_flags, page, extend=extend)


@dataclass(frozen=True)
class Difference:
    """A byte range ``[start, end)`` where two enclave files differ, and what it falls in."""

    start: int
    end: int
    sections: tuple[str, ...]
    """Section names (and "ELF header", "program headers", "section headers") the range overlaps."""
    segments: tuple[str, ...]
    """Program headers whose file bytes the range overlaps, e.g. ``"PT_LOAD[3]"``: those bytes are measured."""

    @property
    def measured(self) -> bool:
        """True when the range overlaps a PT_LOAD segment's file bytes (it can change MRENCLAVE)."""
        return bool(self.segments)


def compare_outside_metadata(signed: bytes, unsigned: bytes) -> list[Difference]:
    """Byte ranges where two enclave files differ, ignoring the signed file's metadata descriptor.

    For an auditor: a rebuilt ``enclave.so`` proves a signed enclave's origin only if this returns ``[]``
    (SGX_FORMATS §2.5). Both files must parse as SDK enclaves; ranges are located in the signed file's ELF.
    A length difference is reported as one range over the extra bytes.
    """
    enclave = SdkEnclave.parse(signed)
    SdkEnclave.parse(unsigned)
    skip_start, skip_end = enclave.note_range()
    ranges = _differing_ranges(signed, unsigned, skip_start, skip_end)
    return [_describe(enclave.elf, start, end) for start, end in ranges]


def _differing_ranges(a: bytes, b: bytes, skip_start: int, skip_end: int) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    common = min(len(a), len(b))
    block = 4096
    va, vb = memoryview(a), memoryview(b)
    for base in range(0, common, block):
        end = min(base + block, common)
        if va[base:end] == vb[base:end]:
            continue
        for i in range(base, end):
            if a[i] != b[i] and not skip_start <= i < skip_end:
                if ranges and ranges[-1][1] == i:
                    ranges[-1] = (ranges[-1][0], i + 1)
                else:
                    ranges.append((i, i + 1))
    if len(a) != len(b):
        ranges.append((common, max(len(a), len(b))))
    return ranges


def _describe(elf: ElfFacts, start: int, end: int) -> Difference:
    def overlaps(lo: int, hi: int) -> bool:
        return lo < end and start < hi

    names = []
    if overlaps(0, elf.header_size):
        names.append("ELF header")
    if overlaps(*elf.phdr_range):
        names.append("program headers")
    if overlaps(*elf.shdr_range):
        names.append("section headers")
    names.extend(
        s.name or "(unnamed)" for s in elf.sections if s.file_size and overlaps(s.offset, s.offset + s.file_size)
    )
    segments = tuple(f"PT_LOAD[{s.index}]" for s in elf.segments if overlaps(s.offset, s.offset + s.filesz))
    return Difference(start, end, tuple(names), segments)
