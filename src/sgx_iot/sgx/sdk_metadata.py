"""Intel SGX SDK enclave metadata (``metadata_t``): what ``sgx_sign`` writes into ``.note.sgxmeta``.

Layout (``SGX_FORMATS.md`` §2.3, linux-sgx ``common/inc/internal/metadata.h``), packed, little-endian:
magic u64 ‖ version u64 (major<<32 | minor) ‖ size u32 ‖ tcs_policy u32 ‖ ssa_frame_size u32 ‖
max_save_buffer_size u32 ‖ desired_misc_select u32 ‖ tcs_min_pool u32 ‖ enclave_size u64 ‖ attributes (16) ‖
enclave_css = SIGSTRUCT (1808) ‖ dirs[] {offset u32, size u32} ‖ data. Offsets in ``dirs``, patch sources and
layout contents are relative to the start of the blob.

``dirs`` has 2 entries (PATCH, LAYOUT) in blobs whose version knows neither ELRANGE nor extend entries, and 4
(+ELRANGE, EXTEND) otherwise — the same version test the SDK loader applies before reading the extra two.
:meth:`Metadata.parse` validates what the SDK loader validates (``loader.cpp validate_metadata``), so a parsed
blob can be replayed without further bounds checks.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import ClassVar

from sgx_iot.errors import FormatError
from sgx_iot.sgx._codec import require_size
from sgx_iot.sgx.attributes import Attributes
from sgx_iot.sgx.sigstruct import Sigstruct

METADATA_MAGIC = 0x86A80294635D0E4C
SIGSTRUCT_OFFSET = 64
DIRS_OFFSET = 1872
GROUP_FLAG = 0x1000
MAJOR_VERSION_GAP = 10
"""``major % 10`` is the metadata generation; ``major > 10`` marks an ELRANGE variant (``SGX_MAJOR_VERSION_GAP``)."""
ENCLAVE_MAX_SIZE = 0x1FFFFFFFFF
"""The SDK loader's ``ENCLAVE_MAX_SIZE_64``: the largest enclave is therefore 64 GiB."""
MAX_PLACED_ENTRIES = 1 << 20
"""Refuse layouts whose groups expand to more entries than this (no real enclave comes close)."""

_HEADER = struct.Struct("<QQIIIIIIQ16s")
_STRUCTURE = "Metadata"


class LayoutId(enum.IntEnum):
    """``layout_entry_t.id`` values of metadata ≥ 1.4 (``metadata.h``)."""

    HEAP_MIN = 1
    HEAP_INIT = 2
    HEAP_MAX = 3
    TCS = 4
    TD = 5
    SSA = 6
    STACK_MAX = 7
    STACK_MIN = 8
    THREAD_GROUP = GROUP_FLAG | 9
    GUARD = 10
    HEAP_DYN_MIN = 11
    HEAP_DYN_INIT = 12
    HEAP_DYN_MAX = 13
    TCS_DYN = 14
    TD_DYN = 15
    SSA_DYN = 16
    STACK_DYN_MAX = 17
    STACK_DYN_MIN = 18
    THREAD_GROUP_DYN = GROUP_FLAG | 19
    RSRV_MIN = 20
    RSRV_INIT = 21
    RSRV_MAX = 22
    USER_REGION = 23


class PageAttr(enum.IntFlag):
    """``layout_entry_t.attributes`` bits (``se_page_attr.h``)."""

    EADD = 0x1
    EEXTEND = 0x2
    EREMOVE = 0x4
    POST_ADD = 0x8
    POST_REMOVE = 0x10
    DYN_THREAD = 0x20
    GROW_DOWN = 0x40


class ExtendEntryId(enum.IntEnum):
    """``extend_entry_t.entry_id`` values (FIPS-certified OpenSSL support)."""

    FIPS_SIG = 0x1001
    SHARED_OBJECT = 0x1002


@dataclass(frozen=True)
class DataDirectory:
    """Where a table lives inside the blob."""

    offset: int
    size: int


@dataclass(frozen=True)
class PatchEntry:
    """``patch_entry_t``: copy ``size`` blob bytes from ``src`` to file offset ``dst`` before loading."""

    dst: int
    src: int
    size: int
    reserved: bytes = bytes(16)

    SIZE: ClassVar[int] = 32
    _S: ClassVar[struct.Struct] = struct.Struct("<QII16s")

    @classmethod
    def parse(cls, data: bytes) -> PatchEntry:
        """Exactly 32 bytes → ``PatchEntry``."""
        require_size(data, cls.SIZE, "PatchEntry")
        return cls(*cls._S.unpack(data))

    def to_bytes(self) -> bytes:
        """The 32-byte encoding."""
        return self._S.pack(self.dst, self.src, self.size, self.reserved)


@dataclass(frozen=True)
class LayoutEntry:
    """``layout_entry_t``: ``page_count`` pages at ``rva`` (heap, stack, TCS, SSA, TD, guard, …)."""

    id: int
    attributes: int
    page_count: int
    rva: int
    content_size: int
    content_offset: int
    si_flags: int

    SIZE: ClassVar[int] = 32
    _S: ClassVar[struct.Struct] = struct.Struct("<HHIQIIQ")

    @classmethod
    def parse(cls, data: bytes) -> LayoutEntry:
        """Exactly 32 bytes → ``LayoutEntry``."""
        require_size(data, cls.SIZE, "LayoutEntry")
        return cls(*cls._S.unpack(data))

    def to_bytes(self) -> bytes:
        """The 32-byte encoding."""
        return self._S.pack(
            self.id, self.attributes, self.page_count, self.rva, self.content_size, self.content_offset, self.si_flags
        )

    @property
    def name(self) -> str:
        """The layout ID's name (``"TCS"``, …) or its hex value when unknown."""
        return _id_name(self.id)


@dataclass(frozen=True)
class LayoutGroup:
    """``layout_group_t``: replay the previous ``entry_count`` entries ``load_times`` times, ``load_step`` apart."""

    id: int
    entry_count: int
    load_times: int
    load_step: int
    reserved: bytes = bytes(16)

    SIZE: ClassVar[int] = 32
    _S: ClassVar[struct.Struct] = struct.Struct("<HHIQ16s")

    @classmethod
    def parse(cls, data: bytes) -> LayoutGroup:
        """Exactly 32 bytes → ``LayoutGroup``."""
        require_size(data, cls.SIZE, "LayoutGroup")
        return cls(*cls._S.unpack(data))

    def to_bytes(self) -> bytes:
        """The 32-byte encoding."""
        return self._S.pack(self.id, self.entry_count, self.load_times, self.load_step, self.reserved)

    @property
    def name(self) -> str:
        """The group ID's name (``"THREAD_GROUP"``, …) or its hex value when unknown."""
        return _id_name(self.id)


@dataclass(frozen=True)
class ExtendEntry:
    """``extend_entry_t`` (FIPS signature or extra shared object)."""

    entry_id: int
    size: int
    offset: int
    reserved: int = 0

    SIZE: ClassVar[int] = 16
    _S: ClassVar[struct.Struct] = struct.Struct("<IIII")

    @classmethod
    def parse(cls, data: bytes) -> ExtendEntry:
        """Exactly 16 bytes → ``ExtendEntry``."""
        require_size(data, cls.SIZE, "ExtendEntry")
        return cls(*cls._S.unpack(data))

    def to_bytes(self) -> bytes:
        """The 16-byte encoding."""
        return self._S.pack(self.entry_id, self.size, self.offset, self.reserved)


@dataclass(frozen=True)
class ElrangeConfig:
    """``elrange_config_entry_t``: the enclave image placed inside a larger ELRANGE."""

    enclave_image_address: int
    elrange_start_address: int
    elrange_size: int

    SIZE: ClassVar[int] = 24
    _S: ClassVar[struct.Struct] = struct.Struct("<QQQ")

    @classmethod
    def parse(cls, data: bytes) -> ElrangeConfig:
        """Exactly 24 bytes → ``ElrangeConfig``."""
        require_size(data, cls.SIZE, "ElrangeConfig")
        return cls(*cls._S.unpack(data))

    def to_bytes(self) -> bytes:
        """The 24-byte encoding."""
        return self._S.pack(self.enclave_image_address, self.elrange_start_address, self.elrange_size)


@dataclass(frozen=True)
class PlacedEntry:
    """A layout entry at its final place: ``rva`` = entry.rva + the group delta it is replayed with."""

    entry: LayoutEntry
    rva: int
    delta: int = 0


@dataclass(frozen=True)
class Metadata:
    """One ``metadata_t`` blob, validated. ``raw`` is the whole blob (contents are addressed inside it)."""

    magic: int
    version: tuple[int, int]
    size: int
    tcs_policy: int
    ssa_frame_size: int
    max_save_buffer_size: int
    desired_misc_select: int
    tcs_min_pool: int
    enclave_size: int
    attributes: Attributes
    enclave_css: bytes
    dirs: tuple[DataDirectory, ...]
    patches: tuple[PatchEntry, ...]
    layout: tuple[LayoutEntry | LayoutGroup, ...]
    extend_entries: tuple[ExtendEntry, ...]
    elrange: ElrangeConfig | None
    raw: bytes = field(repr=False)

    @classmethod
    def parse(cls, data: bytes) -> Metadata:
        """Exactly one blob (``len(data)`` equals its ``size`` field) → ``Metadata``; ``FormatError`` otherwise."""
        data = bytes(data)
        if len(data) < DIRS_OFFSET:
            raise FormatError(_STRUCTURE, "size", len(data), f"{len(data)} bytes is shorter than the "
                              f"{DIRS_OFFSET}-byte metadata header (truncated)")
        (magic, version, size, tcs_policy, ssa, max_save, misc, tcs_min_pool, enclave_size,
         attributes) = _HEADER.unpack_from(data)
        if magic != METADATA_MAGIC:
            raise FormatError(_STRUCTURE, "magic_num", 0, f"{magic:#018x} is not the SGX metadata magic "
                              f"{METADATA_MAGIC:#018x}")
        major, minor = version >> 32, version & 0xFFFFFFFF
        ndirs = 4 if _has_extra_dirs(major, minor) else 2
        data_start = DIRS_OFFSET + 8 * ndirs
        if size != len(data):
            raise FormatError(_STRUCTURE, "size", 16, f"size field {size} differs from the {len(data)} bytes given")
        if size < data_start:
            raise FormatError(_STRUCTURE, "size", 16, f"size {size} is smaller than the header ({data_start})")
        if tcs_policy > 1:
            raise FormatError(_STRUCTURE, "tcs_policy", 20, f"{tcs_policy} is neither 0 (bind) nor 1 (unbind)")
        if enclave_size < 0x1000 or enclave_size & (enclave_size - 1) or enclave_size > ENCLAVE_MAX_SIZE:
            raise FormatError(_STRUCTURE, "enclave_size", 40, f"{enclave_size:#x} is not a power of two from "
                              "0x1000 to 64 GiB (0x1000000000)")
        dirs = tuple(DataDirectory(*struct.unpack_from("<II", data, DIRS_OFFSET + 8 * i)) for i in range(ndirs))
        for i, d in enumerate(dirs):
            if d.size and not (data_start <= d.offset and d.offset + d.size <= size):
                raise FormatError(_STRUCTURE, f"dirs[{i}]", DIRS_OFFSET + 8 * i,
                                  f"table [{d.offset:#x}, +{d.size:#x}) lies outside the blob data")

        patches = tuple(PatchEntry.parse(chunk) for chunk in _table(data, dirs[0], PatchEntry.SIZE, "dirs[0]"))
        for i, p in enumerate(patches):
            if not (data_start <= p.src and p.src + p.size <= size):
                raise FormatError(_STRUCTURE, f"patches[{i}].src", dirs[0].offset + 32 * i,
                                  f"patch source [{p.src:#x}, +{p.size:#x}) lies outside the blob data")
        layout = tuple(
            LayoutGroup.parse(chunk) if int.from_bytes(chunk[:2], "little") & GROUP_FLAG else LayoutEntry.parse(chunk)
            for chunk in _table(data, dirs[1], LayoutEntry.SIZE, "dirs[1]")
        )
        extend_entries: tuple[ExtendEntry, ...] = ()
        elrange = None
        if ndirs == 4:
            if dirs[2].size:
                if dirs[2].size < ElrangeConfig.SIZE:
                    raise FormatError(_STRUCTURE, "dirs[2]", DIRS_OFFSET + 16, "ELRANGE table is too small")
                elrange = ElrangeConfig.parse(data[dirs[2].offset : dirs[2].offset + ElrangeConfig.SIZE])
            extend_entries = tuple(
                ExtendEntry.parse(chunk) for chunk in _table(data, dirs[3], ExtendEntry.SIZE, "dirs[3]")
            )
        metadata = cls(
            magic=magic,
            version=(major, minor),
            size=size,
            tcs_policy=tcs_policy,
            ssa_frame_size=ssa,
            max_save_buffer_size=max_save,
            desired_misc_select=misc,
            tcs_min_pool=tcs_min_pool,
            enclave_size=enclave_size,
            attributes=Attributes.parse(attributes),
            enclave_css=data[SIGSTRUCT_OFFSET : SIGSTRUCT_OFFSET + Sigstruct.SIZE],
            dirs=dirs,
            patches=patches,
            layout=layout,
            extend_entries=extend_entries,
            elrange=elrange,
            raw=data,
        )
        metadata._validate_layout(data_start)
        return metadata

    def to_bytes(self) -> bytes:
        """The blob as stored (tables are views of it, so it is the one source of truth)."""
        return self.raw

    @property
    def data_start(self) -> int:
        """Offset of ``data[]`` (right after ``dirs``)."""
        return DIRS_OFFSET + 8 * len(self.dirs)

    @property
    def version_string(self) -> str:
        """``"major.minor"``."""
        return f"{self.version[0]}.{self.version[1]}"

    @property
    def sigstruct(self) -> Sigstruct:
        """The SIGSTRUCT embedded in this blob (parsed; its signature is not checked here)."""
        return Sigstruct.parse(self.enclave_css)

    @property
    def enclave_hash(self) -> bytes:
        """SIGSTRUCT.ENCLAVEHASH: the MRENCLAVE the signer computed."""
        return self.enclave_css[960:992]

    @property
    def uses_elrange(self) -> bool:
        """True for the ELRANGE variants (major > 10 or an ELRANGE table)."""
        return self.version[0] > MAJOR_VERSION_GAP or self.elrange is not None

    def content(self, offset: int, size: int) -> bytes:
        """``size`` bytes of the blob at ``offset`` (bounds were checked by :meth:`parse`)."""
        return self.raw[offset : offset + size]

    def placed_layout(self) -> tuple[PlacedEntry, ...]:
        """Layout entries in load order with groups expanded (``loader.cpp build_contexts``).

        A group replays the ``entry_count`` table entries just before it ``load_times`` times; the *j*-th replay
        (from 1) places them ``j × load_step`` higher.
        """
        placed: list[PlacedEntry] = []
        for index, item in enumerate(self.layout):
            if isinstance(item, LayoutEntry):
                placed.append(PlacedEntry(item, item.rva))
                continue
            members = self.layout[index - item.entry_count : index]
            for j in range(1, item.load_times + 1):
                delta = j * item.load_step
                placed.extend(PlacedEntry(m, m.rva + delta, delta) for m in members if isinstance(m, LayoutEntry))
        return tuple(placed)

    def _validate_layout(self, data_start: int) -> None:
        """The checks of ``loader.cpp validate_layout_table``: group shapes, contents, alignment, no overlap."""
        base = self.dirs[1].offset
        expanded = 0
        for index, item in enumerate(self.layout):
            where = base + 32 * index
            if isinstance(item, LayoutGroup):
                if item.entry_count > index:
                    raise FormatError(_STRUCTURE, f"layout[{index}].entry_count", where,
                                      f"group replays {item.entry_count} entries but only {index} precede it")
                if any(isinstance(m, LayoutGroup) for m in self.layout[index - item.entry_count : index]):
                    raise FormatError(_STRUCTURE, f"layout[{index}]", where, "a group may not replay another group")
                if item.load_times and item.load_step * item.load_times > self.enclave_size:
                    raise FormatError(_STRUCTURE, f"layout[{index}].load_step", where,
                                      "group replays reach beyond the enclave size")
                expanded += item.entry_count * item.load_times
            else:
                expanded += 1
                if item.content_offset and not (
                    data_start <= item.content_offset and item.content_offset + item.content_size <= self.size
                ):
                    raise FormatError(_STRUCTURE, f"layout[{index}].content_offset", where,
                                      "content lies outside the blob data")
            if expanded > MAX_PLACED_ENTRIES:
                raise FormatError(_STRUCTURE, f"layout[{index}]", where, "layout expands to too many entries")
        spans = sorted((p.rva, p.entry.page_count << 12) for p in self.placed_layout())
        for i, (rva, length) in enumerate(spans):
            if rva % 4096 or rva + length > self.enclave_size:
                raise FormatError(_STRUCTURE, "layout", base, f"entry at rva {rva:#x} (+{length:#x}) is not a "
                                  "page-aligned range inside the enclave")
            if i + 1 < len(spans) and rva + length > spans[i + 1][0]:
                raise FormatError(_STRUCTURE, "layout", base, f"entries at {rva:#x} and {spans[i + 1][0]:#x} overlap")


def parse_metadata_blobs(descriptor: bytes) -> list[Metadata]:
    """Every ``metadata_t`` stored back to back in a ``.note.sgxmeta`` descriptor.

    Iteration stops at the first position whose magic is not the metadata magic or whose size is 0, as the
    SDK does (``sign_tool.cpp``); an all-zero descriptor (an unsigned build) gives ``[]``. A blob that claims
    more bytes than remain, or fails validation, raises ``FormatError``.
    """
    blobs: list[Metadata] = []
    pos = 0
    while pos + 20 <= len(descriptor):
        magic, _version, size = struct.unpack_from("<QQI", descriptor, pos)
        if magic != METADATA_MAGIC or size == 0:
            break
        if pos + size > len(descriptor):
            raise FormatError(_STRUCTURE, "size", pos + 16, f"blob of {size} bytes overruns the "
                              f"{len(descriptor)}-byte descriptor")
        try:
            blobs.append(Metadata.parse(descriptor[pos : pos + size]))
        except FormatError as exc:
            offset = None if exc.offset is None else exc.offset + pos
            raise FormatError(exc.structure, f"blob[{len(blobs)}].{exc.field}", offset, exc.reason) from None
        pos += size
    return blobs


def _has_extra_dirs(major: int, minor: int) -> bool:
    """Whether a blob of this version carries the ELRANGE and EXTEND directories (4 dirs instead of 2)."""
    generation = major % MAJOR_VERSION_GAP
    return major > MAJOR_VERSION_GAP or (generation == 1 and minor >= 5) or (generation == 3 and minor >= 2)


def _table(data: bytes, directory: DataDirectory, entry_size: int, name: str) -> list[bytes]:
    if directory.size % entry_size:
        raise FormatError(_STRUCTURE, name, None, f"table size {directory.size} is not a multiple of {entry_size}")
    start = directory.offset
    return [data[start + i : start + i + entry_size] for i in range(0, directory.size, entry_size)]


def _id_name(value: int) -> str:
    try:
        return LayoutId(value).name
    except ValueError:
        return f"{value:#x}"
