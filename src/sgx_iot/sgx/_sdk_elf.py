"""The ELF facts an Intel SGX SDK enclave loader needs, read with pyelftools from bytes in memory.

Only what ``psw/urts/parser/elfparser.cpp`` looks at: the ELF header checks, program headers (PT_LOAD segments),
section headers (names, file ranges, addresses), the ``.note.sgxmeta`` note, and the dynamic table entries used
for the DT_TEXTREL relocation bitmap. pyelftools raises its own exceptions (and occasionally plain Python ones)
on malformed input; they are all turned into :class:`FormatError` here.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from elftools.elf.elffile import ELFFile

from sgx_iot.errors import FormatError

PAGE_SIZE = 4096
NOTE_NAME = b"sgx_metadata\x00"
_STRUCTURE = "SdkEnclave"

_PF_X, _PF_W, _PF_R = 1, 2, 4
_DT_NULL, _DT_PLTRELSZ, _DT_RELA, _DT_RELASZ, _DT_TEXTREL, _DT_JMPREL = 0, 2, 7, 8, 22, 23
_R_X86_64_NONE = 0
_RELA = struct.Struct("<QQq")


@dataclass(frozen=True)
class LoadSegment:
    """A PT_LOAD program header: its file bytes ``[offset, offset+filesz)`` go to ``vaddr`` (``memsz`` bytes)."""

    index: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int
    flags: int
    align: int

    @property
    def si_flags(self) -> int:
        """SECINFO flags the SDK gives its pages: PT_REG | R/W/X from ``p_flags`` (``page_attr_to_si_flags``)."""
        return (
            0x200
            | (0x1 if self.flags & _PF_R else 0)
            | (0x2 if self.flags & _PF_W else 0)
            | (0x4 if self.flags & _PF_X else 0)
        )


@dataclass(frozen=True)
class SectionInfo:
    """A section header: name, type, flags, load address and file range (``NOBITS`` sections have none)."""

    name: str
    type: str
    flags: int
    addr: int
    offset: int
    size: int

    @property
    def file_size(self) -> int:
        """Bytes the section occupies in the file (0 for SHT_NOBITS)."""
        return 0 if self.type == "SHT_NOBITS" else self.size


@dataclass(frozen=True)
class ElfFacts:
    """What the SDK loader reads from an enclave ELF file."""

    segments: tuple[LoadSegment, ...]
    sections: tuple[SectionInfo, ...]
    note_offset: int
    """File offset of the ``.note.sgxmeta`` descriptor (= sh_offset + 12 + namesz, no padding)."""
    note_size: int
    """``descsz`` of the note (METADATA_SIZE of the SDK that built it)."""
    header_size: int
    phdr_range: tuple[int, int]
    shdr_range: tuple[int, int]
    dynamic: tuple[tuple[int, int], ...]
    """(d_tag, d_val) pairs of the PT_DYNAMIC table up to DT_NULL."""

    @property
    def has_textrel(self) -> bool:
        """Whether the dynamic table has DT_TEXTREL (text relocations: the loader then marks pages writable)."""
        return any(tag == _DT_TEXTREL for tag, _ in self.dynamic)


def read_elf(data: bytes) -> ElfFacts:
    """Parse ``data`` as a 64-bit x86-64 ET_DYN ELF with a ``.note.sgxmeta`` note; ``FormatError`` otherwise."""
    try:
        return _read(data)
    except FormatError:
        raise
    except Exception as exc:  # pyelftools signals malformed files with many exception types
        raise FormatError(_STRUCTURE, "elf", None, f"not a readable ELF file ({type(exc).__name__}: {exc})") from None


def _read(data: bytes) -> ElfFacts:
    if data[:4] != b"\x7fELF":
        raise FormatError(_STRUCTURE, "e_ident", 0, "missing the ELF magic \\x7fELF; this is not an ELF file")
    if data[4:5] != b"\x02" or data[5:6] != b"\x01":
        raise FormatError(_STRUCTURE, "e_ident", 4, "only 64-bit little-endian enclaves are supported")
    elf = ELFFile(io.BytesIO(data))
    header = elf.header
    if header["e_type"] != "ET_DYN":
        raise FormatError(_STRUCTURE, "e_type", 16, f"{header['e_type']} is not ET_DYN (a shared object)")
    if header["e_machine"] != "EM_X86_64":
        raise FormatError(_STRUCTURE, "e_machine", 18, f"{header['e_machine']} is not EM_X86_64")
    segments = []
    dynamic: tuple[tuple[int, int], ...] = ()
    for index in range(elf.num_segments()):
        ph = elf.get_segment(index).header
        if ph["p_offset"] + ph["p_filesz"] > len(data):
            raise FormatError(_STRUCTURE, f"phdr[{index}]", header["e_phoff"],
                              "segment extends past the end of the file")
        if ph["p_type"] == "PT_LOAD":
            if ph["p_align"] % PAGE_SIZE:
                raise FormatError(_STRUCTURE, f"phdr[{index}].p_align", header["e_phoff"],
                                  f"PT_LOAD alignment {ph['p_align']:#x} is not a multiple of 4096")
            segments.append(LoadSegment(index, ph["p_offset"], ph["p_vaddr"], ph["p_filesz"], ph["p_memsz"],
                                        ph["p_flags"], ph["p_align"]))
        elif ph["p_type"] == "PT_DYNAMIC" and not dynamic:
            dynamic = _dynamic_table(data[ph["p_offset"] : ph["p_offset"] + ph["p_filesz"]])
    sections = []
    for index in range(elf.num_sections()):
        sh = elf.get_section(index)
        sections.append(SectionInfo(sh.name, str(sh["sh_type"]), sh["sh_flags"], sh["sh_addr"], sh["sh_offset"],
                                    sh["sh_size"]))
    note_offset, note_size = _note(data, sections)
    phdr_end = header["e_phoff"] + header["e_phnum"] * header["e_phentsize"]
    shdr_end = header["e_shoff"] + header["e_shnum"] * header["e_shentsize"]
    return ElfFacts(
        segments=tuple(segments),
        sections=tuple(sections),
        note_offset=note_offset,
        note_size=note_size,
        header_size=header["e_ehsize"],
        phdr_range=(header["e_phoff"], phdr_end),
        shdr_range=(header["e_shoff"], shdr_end),
        dynamic=dynamic,
    )


def _note(data: bytes, sections: list[SectionInfo]) -> tuple[int, int]:
    """(descriptor offset, descsz) of ``.note.sgxmeta`` (``elfparser.cpp get_meta_property``)."""
    note = next((s for s in sections if s.name == ".note.sgxmeta"), None)
    if note is None:
        raise FormatError(_STRUCTURE, ".note.sgxmeta", None,
                          "no .note.sgxmeta section: this is not an Intel SGX SDK enclave")
    if note.type != "SHT_NOTE" or note.offset + 12 > len(data):
        raise FormatError(_STRUCTURE, ".note.sgxmeta", note.offset, "the section is not a readable SHT_NOTE")
    namesz, descsz, _type = struct.unpack_from("<III", data, note.offset)
    name = data[note.offset + 12 : note.offset + 12 + namesz]
    if name != NOTE_NAME:
        raise FormatError(_STRUCTURE, ".note.sgxmeta", note.offset + 12,
                          f"note name {name[:32]!r} is not 'sgx_metadata'")
    start = note.offset + 12 + namesz
    if start + descsz > min(len(data), note.offset + note.size):
        raise FormatError(_STRUCTURE, ".note.sgxmeta", note.offset + 4,
                          f"descriptor of {descsz} bytes overruns the section or the file")
    return start, descsz


def _dynamic_table(raw: bytes) -> tuple[tuple[int, int], ...]:
    entries = []
    for pos in range(0, len(raw) - 15, 16):
        tag, value = struct.unpack_from("<qQ", raw, pos)
        if tag == _DT_NULL:
            break
        entries.append((tag, value))
    return tuple(entries)


def relocation_pages(facts: ElfFacts, data: bytes) -> frozenset[int]:
    """Page frames holding a relocation target when DT_TEXTREL is set (``ElfParser::get_reloc_bitmap``).

    Reads the JMPREL and RELA tables from the sections whose address equals the dynamic pointers; a target
    within 8 bytes of a page end also marks the next page. Frames the SDK's bitmap does not cover (past the
    image end, rounded up to 8 frames) are dropped. Empty when there is no DT_TEXTREL.
    """
    if not facts.has_textrel:
        return frozenset()
    dyn = dict(facts.dynamic)  # the last occurrence of a tag wins, as in parse_dyn's array fill
    tables = []
    if _DT_JMPREL in dyn:
        tables.append((dyn[_DT_JMPREL], dyn.get(_DT_PLTRELSZ, 0)))
    if _DT_RELA in dyn:
        tables.append((dyn[_DT_RELA], dyn.get(_DT_RELASZ, 0)))
    if not facts.segments:
        return frozenset()
    top = max(facts.segments, key=lambda s: s.vaddr)
    bitmap_bytes = ((top.vaddr + top.memsz + PAGE_SIZE - 1) // PAGE_SIZE + 7) // 8
    frames: set[int] = set()
    for address, size in tables:
        section = next((s for s in facts.sections if s.addr == address), None)
        if section is None:
            raise FormatError(_STRUCTURE, "dynamic", None, f"no section holds the relocation table at {address:#x}")
        if section.offset + size > len(data):
            raise FormatError(_STRUCTURE, "dynamic", section.offset, "relocation table overruns the file")
        for pos in range(section.offset, section.offset + size, _RELA.size):
            if pos + _RELA.size > len(data):
                raise FormatError(_STRUCTURE, "dynamic", pos, "relocation entry overruns the file")
            r_offset, r_info, _addend = _RELA.unpack_from(data, pos)
            if r_info & 0xFFFFFFFF == _R_X86_64_NONE:
                continue
            frames.add(r_offset >> 12)
            if r_offset & (PAGE_SIZE - 1) > PAGE_SIZE - 8:
                frames.add((r_offset >> 12) + 1)
    return frozenset(f for f in frames if f // 8 < bitmap_bytes)
