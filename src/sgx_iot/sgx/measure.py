"""The SGX measurement primitive: MRENCLAVE as a SHA-256 over ECREATE / EADD / EEXTEND records.

Byte layout (``SGX_FORMATS.md`` §1): every operation contributes one 64-byte block,

* ECREATE: ``"ECREATE\\0"`` ‖ SSAFRAMESIZE u32 (pages) ‖ SIZE u64 ‖ 44 zero bytes;
* EADD:    ``"EADD\\0\\0\\0\\0"`` ‖ page offset u64 ‖ SECINFO.FLAGS u64 ‖ 40 zero bytes;
* EEXTEND: ``"EEXTEND\\0"`` ‖ chunk offset u64 ‖ 48 zero bytes, followed by the 256 chunk bytes.

A page that is EADDed but not EEXTENDed contributes only its EADD block. :class:`Measurement` is the streaming
engine (what a loader drives page by page); :class:`EnclaveImage` is a complete, validated page list measured in
one call (what a builder or an auditor holds).
"""

from __future__ import annotations

import enum
import hashlib
import struct
import sys
from array import array
from dataclasses import dataclass

from sgx_iot.errors import FormatError

PAGE_SIZE = 4096
EEXTEND_CHUNK = 256
SECINFO_FLAGS_ALLOWED = 0xFF07
"""Only these SECINFO.FLAGS bits may be set (R, W, X and the 8-bit PAGE_TYPE); ``SI_FLAGS_EXTERNAL``."""

_ECREATE = struct.Struct("<8sIQ44x")
_EADD = struct.Struct("<8sQQ40x")
_EEXTEND = struct.Struct("<8sQ48x")
_EADD_TAG = int.from_bytes(b"EADD\0\0\0\0", "little")
_EEXTEND_TAG = int.from_bytes(b"EEXTEND\0", "little")
_BATCH_BYTES = 1 << 20
"""Bytes of records built per batch by :meth:`Measurement.add_pages` (bounds its memory)."""


class SecInfoFlags(enum.IntFlag):
    """SECINFO.FLAGS bits: permissions in bits 2:0, page type in bits 15:8."""

    R = 0x1
    W = 0x2
    X = 0x4
    PT_TCS = 0x100
    PT_REG = 0x200


class Measurement:
    """A streaming MRENCLAVE computation.

    Call :meth:`ecreate` once, first; then :meth:`eadd` / :meth:`eextend` / :meth:`add_page` in load order; then
    :meth:`digest`, after which the object refuses further operations. Offsets are relative to the enclave base.
    Arguments outside the architectural ranges raise :class:`FormatError` (structure ``"Measurement"``).
    """

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._created = False
        self._finished = False
        self._size = 0
        self.eadd_count = 0
        """Number of EADD operations so far (for statistics and benchmarks)."""

    def _check_open(self, op: str) -> None:
        if self._finished:
            raise FormatError("Measurement", op, None, "the measurement is already finalised")
        if not self._created and op != "ecreate":
            raise FormatError("Measurement", op, None, "ECREATE must come first")

    def ecreate(self, ssa_frame_size: int, size: int) -> None:
        """Start the measurement of an enclave of ``size`` bytes with SSA frames of ``ssa_frame_size`` pages."""
        self._check_open("ecreate")
        if self._created:
            raise FormatError("Measurement", "ecreate", None, "ECREATE may be done only once")
        if not 0 <= ssa_frame_size < 1 << 32:
            raise FormatError("Measurement", "ssa_frame_size", None, f"{ssa_frame_size} does not fit in u32")
        if not 0 < size < 1 << 64:
            raise FormatError("Measurement", "size", None, f"enclave size {size} is not a positive u64")
        self._sha.update(_ECREATE.pack(b"ECREATE", ssa_frame_size, size))
        self._created = True
        self._size = size

    def eadd(self, offset: int, flags: int) -> None:
        """Record the addition of the page at ``offset`` (page aligned) with SECINFO.FLAGS ``flags``."""
        self._check_open("eadd")
        if offset % PAGE_SIZE or not 0 <= offset < self._size:
            raise FormatError("Measurement", "eadd.offset", None, f"page offset {offset:#x} is not an aligned "
                              f"offset inside the {self._size:#x}-byte enclave")
        if flags & ~SECINFO_FLAGS_ALLOWED or flags < 0:
            raise FormatError("Measurement", "eadd.flags", None,
                              f"SECINFO flags {flags:#x} outside {SECINFO_FLAGS_ALLOWED:#x}")
        self._sha.update(_EADD.pack(b"EADD", offset, flags))
        self.eadd_count += 1

    def eextend(self, offset: int, chunk: bytes) -> None:
        """Record the measurement of the 256-byte ``chunk`` at ``offset`` (256-byte aligned)."""
        self._check_open("eextend")
        if offset % EEXTEND_CHUNK or not 0 <= offset < self._size:
            raise FormatError("Measurement", "eextend.offset", None, f"chunk offset {offset:#x} is not a 256-byte "
                              f"aligned offset inside the {self._size:#x}-byte enclave")
        if len(chunk) != EEXTEND_CHUNK:
            raise FormatError("Measurement", "eextend.chunk", None, f"chunk is {len(chunk)} bytes, not 256")
        self._sha.update(_EEXTEND.pack(b"EEXTEND", offset))
        self._sha.update(chunk)

    def add_page(self, offset: int, flags: int, content: bytes, *, extend: bool = True) -> None:
        """EADD the 4096-byte page ``content`` at ``offset``, then EEXTEND its 16 chunks when ``extend``."""
        if len(content) != PAGE_SIZE:
            raise FormatError("Measurement", "add_page.content", None, f"page is {len(content)} bytes, not 4096")
        self.eadd(offset, flags)
        if extend:
            view = memoryview(content)
            pack = _EEXTEND.pack
            # one update per page: 16 × (64-byte EEXTEND header ‖ 256 data bytes)
            self._sha.update(b"".join(
                part
                for pos in range(0, PAGE_SIZE, EEXTEND_CHUNK)
                for part in (pack(b"EEXTEND", offset + pos), view[pos : pos + EEXTEND_CHUNK])
            ))

    def add_pages(self, offset: int, count: int, flags: int, content: bytes, *, extend: bool = True) -> None:
        """Add ``count`` consecutive pages from ``offset``, all holding the same 4096-byte ``content``.

        Equivalent to ``count`` calls of :meth:`add_page` (same hash input), but builds the records in batches
        so that a large heap or stack (millions of pages) is measured at hashing speed without allocating it.
        """
        self._check_open("add_pages")
        if len(content) != PAGE_SIZE:
            raise FormatError("Measurement", "add_pages.content", None, f"page is {len(content)} bytes, not 4096")
        if count < 0 or offset % PAGE_SIZE or offset < 0 or offset + count * PAGE_SIZE > self._size:
            raise FormatError("Measurement", "add_pages.offset", None, f"{count} pages at {offset:#x} do not fit "
                              f"page-aligned inside the {self._size:#x}-byte enclave")
        if flags & ~SECINFO_FLAGS_ALLOWED or flags < 0:
            raise FormatError("Measurement", "add_pages.flags", None,
                              f"SECINFO flags {flags:#x} outside {SECINFO_FLAGS_ALLOWED:#x}")
        # One page's records as 64-bit words: EADD block (8 words), then per chunk a header (8) and data (32).
        template = array("Q", [_EADD_TAG, 0, flags, 0, 0, 0, 0, 0])
        if extend:
            data = array("Q", bytes(content))
            if sys.byteorder == "big":
                data.byteswap()
            for pos in range(0, PAGE_SIZE // 8, EEXTEND_CHUNK // 8):
                template.extend([_EEXTEND_TAG, 0, 0, 0, 0, 0, 0, 0])
                template.extend(data[pos : pos + EEXTEND_CHUNK // 8])
        words = len(template)
        per_batch = max(1, _BATCH_BYTES // (8 * words))
        done = 0
        while done < count:
            n = min(per_batch, count - done)
            start = offset + done * PAGE_SIZE
            batch = template * n
            batch[1::words] = array("Q", range(start, start + n * PAGE_SIZE, PAGE_SIZE))
            if extend:
                for i in range(PAGE_SIZE // EEXTEND_CHUNK):
                    first = start + i * EEXTEND_CHUNK
                    batch[9 + 40 * i :: words] = array("Q", range(first, first + n * PAGE_SIZE, PAGE_SIZE))
            if sys.byteorder == "big":
                batch.byteswap()
            self._sha.update(batch)
            done += n
        self.eadd_count += count

    def digest(self) -> bytes:
        """Finalise and return MRENCLAVE (32 bytes). The measurement accepts no operation afterwards."""
        self._check_open("digest")
        self._finished = True
        return self._sha.digest()


@dataclass(frozen=True)
class Page:
    """One page of an enclave image: where it goes, its SECINFO flags, its 4096 bytes, and whether it is measured."""

    offset: int
    flags: int
    content: bytes
    extend: bool = True


@dataclass(frozen=True)
class EnclaveImage:
    """A complete enclave image: size, SSA frame size (pages) and the pages in load order."""

    size: int
    ssa_frame_size: int
    pages: tuple[Page, ...]

    def validate(self) -> None:
        """Raise :class:`FormatError` unless size is a power of two ≥ 4096 and every page is well placed."""
        if self.size < PAGE_SIZE or self.size & (self.size - 1) or self.size >= 1 << 64:
            raise FormatError("EnclaveImage", "size", None, f"{self.size:#x} is not a power of two ≥ 0x1000")
        if not 0 <= self.ssa_frame_size < 1 << 32:
            raise FormatError("EnclaveImage", "ssa_frame_size", None, f"{self.ssa_frame_size} does not fit in u32")
        seen: set[int] = set()
        for index, page in enumerate(self.pages):
            where = f"pages[{index}]"
            if page.offset % PAGE_SIZE or not 0 <= page.offset < self.size:
                raise FormatError("EnclaveImage", f"{where}.offset", None,
                                  f"{page.offset:#x} is not a page-aligned offset inside the enclave")
            if page.offset in seen:
                raise FormatError("EnclaveImage", f"{where}.offset", None, f"page {page.offset:#x} is added twice")
            seen.add(page.offset)
            if page.flags < 0 or page.flags & ~SECINFO_FLAGS_ALLOWED:
                raise FormatError("EnclaveImage", f"{where}.flags", None,
                                  f"SECINFO flags {page.flags:#x} outside {SECINFO_FLAGS_ALLOWED:#x}")
            if len(page.content) != PAGE_SIZE:
                raise FormatError("EnclaveImage", f"{where}.content", None,
                                  f"page is {len(page.content)} bytes, not 4096")

    def mrenclave(self) -> bytes:
        """Validate the image and return its MRENCLAVE (ECREATE, then EADD[+EEXTEND] per page in order)."""
        self.validate()
        measurement = Measurement()
        measurement.ecreate(self.ssa_frame_size, self.size)
        for page in self.pages:
            measurement.add_page(page.offset, page.flags, page.content, extend=page.extend)
        return measurement.digest()
