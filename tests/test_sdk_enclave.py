"""Intel SGX SDK enclaves: metadata parsing and MRENCLAVE replay against the real vectors (vectors/README.md)."""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgx_iot.errors import FormatError
from sgx_iot.sgx import measure as sdk_measure
from sgx_iot.sgx import sdk_enclave as sdk_enclave_module
from sgx_iot.sgx._sdk_elf import relocation_pages
from sgx_iot.sgx.sdk_enclave import SdkEnclave, compare_outside_metadata, replay
from sgx_iot.sgx.sdk_metadata import GROUP_FLAG, LayoutEntry, LayoutGroup, Metadata, parse_metadata_blobs

# file → (metadata versions, enclave size, MRENCLAVE, MRSIGNER), from vectors/README.md
SIGNED = {
    "enclaves/Jumpst3r+tensorflow-lite-sgx__enclave.signed.so": (
        ["2.4", "2.1", "1.4"], 0x1000000,
        "dfc7158c0a5be938529dcab2731ca88b178452e1ea7085725f03cff9ed6be081",
        "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e",
    ),
    "enclaves/meowlawat+RDS-TEE-SGX__enclave.signed.so": (
        ["1.5"], 0x1000000,
        "6aa9bc4ae194db671cb423816b8bf54ba2de0a8141bcea1a34457cab9cc4c8f4",
        "788f1195cabf2a7ecf7f0809b0c59edfb34d5a47e4131bf648604e6e5a4cf32f",
    ),
    "enclaves/h0mur0+IT-MPSI-with-TEE__enclave.signed.so": (
        ["1.5"], 0x1000000,
        "6478d9e3e12396357aa6cce73c55b8ff54a6a5e6ed8161618a720a2c775e3ef9",
        "2321bcb26158330340b9287d28e59a12ead44c161c0f149e7a01770d64c5b195",
    ),
    "enclaves/xlhuang37+EnclaveAsan__enclave.signed.so": (
        ["2.4", "2.1", "1.4"], 0x1000000,
        "43fb3f2f5c106d6d19db24e4e0ef497d8e67a15c26aff996043a87a85e8b82bd",
        "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e",
    ),
    "dcap/bazingajack-seal/BazingaJack.libenclave_seal.signed.so": (
        ["1.5"], 0x8000000,
        "d17c8e8a6cb4629e581865693d12a25f3bb0072dfd7b5cb1d12df7f850fdf0f6",
        "ef7de2edeb583a6ca05d147b7b3e41ec6f888e924e877d5b6c034d367c435a1c",
    ),
    "ias/iot-gateway-2021-06/enclave.signed.so": (
        None, None, "4985c91b6a9cf7a4d56384d25ed9008d9be7f61fa108e4e2669247b11acc013f",
        "3db0e0741cfed690b4ce6499e3fb078dfb3918976747d282f6818cf387dccb8e",
    ),
    "ias/iot-gateway-2021-12/enclave.signed.so": (
        None, None, "72cfdb1e92ca2354857bc3ddd5133888fc122bc0eb467e42b80c61bdf027f43f",
        "7b9b32fa1d255acf8ebb245308b7ce7a1f755a5d325a64af1309f2e9c686e00d",
    ),
}
BAZINGA_SIGNED = "dcap/bazingajack-seal/BazingaJack.libenclave_seal.signed.so"
BAZINGA_UNSIGNED = "dcap/bazingajack-seal/BazingaJack.libenclave_seal.so"
BAZINGA_MRENCLAVE = "d17c8e8a6cb4629e581865693d12a25f3bb0072dfd7b5cb1d12df7f850fdf0f6"


@pytest.fixture(scope="module")
def bazinga(vectors: Path) -> tuple[bytes, bytes]:
    return (vectors / BAZINGA_SIGNED).read_bytes(), (vectors / BAZINGA_UNSIGNED).read_bytes()


def _section(enclave: SdkEnclave, name: str) -> tuple[int, int]:
    section = next(s for s in enclave.elf.sections if s.name == name)
    return section.offset, section.size


def _flip(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 0x01
    return bytes(out)


@pytest.mark.parametrize("name", sorted(SIGNED))
def test_replay_reproduces_every_blob(vectors: Path, name: str) -> None:
    versions, size, mrenclave, mrsigner = SIGNED[name]
    enclave = SdkEnclave.parse((vectors / name).read_bytes())
    assert enclave.signed
    if versions is not None:
        assert [m.version_string for m in enclave.metadata] == versions
        assert {m.enclave_size for m in enclave.metadata} == {size}
    results = enclave.measure()
    assert len(results) == len(enclave.metadata) >= 1
    for result in results:
        assert result.mrenclave.hex() == mrenclave
        assert result.enclave_hash.hex() == mrenclave
        assert result.matches
    # The embedded SIGSTRUCT is the one the README describes (MRSIGNER = SHA-256 of the stored modulus).
    assert hashlib.sha256(enclave.metadata[0].enclave_css[128:512]).hexdigest() == mrsigner
    assert enclave.sigstruct.enclave_hash.hex() == mrenclave


def test_unsigned_build_has_no_metadata_but_replays_with_the_signed_one(bazinga: tuple[bytes, bytes]) -> None:
    signed_bytes, unsigned_bytes = bazinga
    signed, unsigned = SdkEnclave.parse(signed_bytes), SdkEnclave.parse(unsigned_bytes)
    assert not unsigned.signed and unsigned.metadata == []
    assert unsigned.note_range() == signed.note_range()
    start, end = signed.note_range()
    assert end - start == 0x6000
    with pytest.raises(FormatError, match="not signed"):
        unsigned.sigstruct
    assert replay(signed.metadata[0], unsigned_bytes).hex() == BAZINGA_MRENCLAVE
    assert compare_outside_metadata(signed_bytes, unsigned_bytes) == []


def test_a_text_byte_changes_mrenclave_and_is_reported(bazinga: tuple[bytes, bytes]) -> None:
    signed_bytes, unsigned_bytes = bazinga
    signed = SdkEnclave.parse(signed_bytes)
    offset, size = _section(signed, ".text")
    tampered = _flip(unsigned_bytes, offset + size // 2)
    assert replay(signed.metadata[0], tampered).hex() != BAZINGA_MRENCLAVE
    differences = compare_outside_metadata(signed_bytes, tampered)
    assert len(differences) == 1
    diff = differences[0]
    assert (diff.start, diff.end) == (offset + size // 2, offset + size // 2 + 1)
    assert ".text" in diff.sections and diff.measured


def test_the_entry_point_is_measured(bazinga: tuple[bytes, bytes]) -> None:
    signed_bytes, _ = bazinga
    signed = SdkEnclave.parse(signed_bytes)
    tampered = _flip(signed_bytes, 24)  # e_entry
    assert replay(signed.metadata[0], tampered).hex() != BAZINGA_MRENCLAVE


@pytest.mark.parametrize("name", [".symtab", ".strtab", ".comment"])
def test_unloaded_section_bytes_do_not_change_mrenclave(bazinga: tuple[bytes, bytes], name: str) -> None:
    signed_bytes, unsigned_bytes = bazinga
    signed = SdkEnclave.parse(signed_bytes)
    offset, size = _section(signed, name)
    tampered = _flip(unsigned_bytes, offset + size // 2)
    assert replay(signed.metadata[0], tampered).hex() == BAZINGA_MRENCLAVE
    (diff,) = compare_outside_metadata(signed_bytes, tampered)
    assert name in diff.sections and not diff.measured


def test_length_difference_is_reported(bazinga: tuple[bytes, bytes]) -> None:
    signed_bytes, unsigned_bytes = bazinga
    (diff,) = compare_outside_metadata(signed_bytes, unsigned_bytes + b"\0" * 10)
    assert (diff.start, diff.end) == (len(signed_bytes), len(signed_bytes) + 10)


# --- metadata structure -------------------------------------------------------------------------------------


def _blob(signed_bytes: bytes) -> bytes:
    enclave = SdkEnclave.parse(signed_bytes)
    return enclave.metadata[0].raw


def test_metadata_fields_of_bazingajack(bazinga: tuple[bytes, bytes]) -> None:
    metadata = SdkEnclave.parse(bazinga[0]).metadata[0]
    assert metadata.version == (1, 5) and metadata.size == 0x1088
    assert (metadata.tcs_policy, metadata.ssa_frame_size, metadata.max_save_buffer_size) == (1, 1, 2688)
    assert metadata.enclave_size == 0x8000000
    assert (metadata.attributes.flags, metadata.attributes.xfrm) == (0x4, 0xE7)
    assert len(metadata.patches) == 4 and len(metadata.dirs) == 4
    assert metadata.elrange is None and metadata.extend_entries == ()
    tcs = [p for p in metadata.placed_layout() if p.entry.si_flags == 0x100]
    assert len(tcs) == 1 and tcs[0].entry.content_size == 72
    assert Metadata.parse(metadata.to_bytes()) == metadata


def test_groups_expand_like_the_loader(vectors: Path) -> None:
    enclave = SdkEnclave.parse((vectors / SIGNED_JUMPSTER).read_bytes())
    blob_14 = enclave.metadata[2]
    assert blob_14.version == (1, 4)
    group = blob_14.layout[-1]
    assert isinstance(group, LayoutGroup) and group.id == GROUP_FLAG | 9
    assert (group.entry_count, group.load_times, group.load_step) == (8, 9, 0x74000)
    placed = blob_14.placed_layout()
    # 10 table entries before the group + 9 replays of its 8 members
    assert len(placed) == 10 + 9 * 8
    tcs = [p.rva for p in placed if p.entry.si_flags == 0x100]
    assert tcs == [0x1E4000 + j * 0x74000 for j in range(10)]


SIGNED_JUMPSTER = "enclaves/Jumpst3r+tensorflow-lite-sgx__enclave.signed.so"


def _set(blob: bytes, offset: int, fmt: str, *values: int) -> bytes:
    out = bytearray(blob)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b[:1000], "size"),
        (lambda b: _set(b, 0, "<Q", 1), "magic_num"),
        (lambda b: b + b"\0", "size"),
        (lambda b: _set(b, 20, "<I", 2), "tcs_policy"),
        (lambda b: _set(b, 40, "<Q", 0x3000), "enclave_size"),
        (lambda b: _set(b, 40, "<Q", 1 << 37), "enclave_size"),
        (lambda b: _set(b, 1872, "<II", 0x2000, 32), "dirs[0]"),
        (lambda b: _set(b, 1880, "<II", 3880, 33), "dirs[1]"),
    ],
)
def test_malformed_metadata_is_refused(
    bazinga: tuple[bytes, bytes], mutate: Callable[[bytes], bytes], field: str
) -> None:
    with pytest.raises(FormatError) as info:
        Metadata.parse(mutate(_blob(bazinga[0])))
    assert info.value.structure == "Metadata" and info.value.field == field


def test_bad_layout_is_refused(bazinga: tuple[bytes, bytes]) -> None:
    blob = _blob(bazinga[0])
    metadata = Metadata.parse(blob)
    layout_offset = metadata.dirs[1].offset
    last = layout_offset + 32 * (len(metadata.layout) - 1)
    # the group replays more entries than precede it
    with pytest.raises(FormatError, match="only 10 precede"):
        Metadata.parse(_set(blob, last, "<HHIQ", GROUP_FLAG | 9, 11, 1, 0x74000))
    # replaying the thread once more overlaps nothing, but a step of 0 lands on the same pages
    with pytest.raises(FormatError, match="overlap"):
        Metadata.parse(_set(blob, last, "<HHIQ", GROUP_FLAG | 9, 8, 1, 0))
    # a heap entry moved off a page boundary
    first = metadata.layout[0]
    assert isinstance(first, LayoutEntry)
    with pytest.raises(FormatError, match="page-aligned"):
        Metadata.parse(_set(blob, layout_offset + 8, "<Q", first.rva + 8))
    # a TCS template pointing outside the blob
    with pytest.raises(FormatError, match="outside the blob"):
        Metadata.parse(_set(blob, layout_offset + 32 * 6 + 20, "<I", 0x2000))


def test_unsupported_features_are_refused_not_guessed(bazinga: tuple[bytes, bytes]) -> None:
    signed_bytes, _ = bazinga
    blob = _blob(signed_bytes)
    elrange = Metadata.parse(_set(blob, 8, "<Q", (11 << 32) | 5))
    with pytest.raises(FormatError, match="ELRANGE"):
        replay(elrange, signed_bytes)
    unknown = Metadata.parse(_set(blob, 8, "<Q", (4 << 32) | 0))
    with pytest.raises(FormatError, match="version 4.0"):
        replay(unknown, signed_bytes)
    # an extend entry (FIPS shared object) in the 4th directory, stored in the blob's last 16 bytes
    size = len(blob)
    with_extend = _set(_set(blob, 1896, "<II", size - 16, 16), size - 16, "<IIII", 0x1002, 0, 0, 0)
    with pytest.raises(FormatError, match="extend entries"):
        replay(Metadata.parse(with_extend), signed_bytes)


def test_descriptor_iteration(bazinga: tuple[bytes, bytes]) -> None:
    blob = _blob(bazinga[0])
    assert parse_metadata_blobs(bytes(0x6000)) == []
    assert len(parse_metadata_blobs(blob + bytes(100))) == 1
    assert len(parse_metadata_blobs(blob + blob + bytes(8))) == 2
    with pytest.raises(FormatError, match="overruns"):
        parse_metadata_blobs(blob[:-1])


def test_non_enclaves_are_refused(vectors: Path) -> None:
    with pytest.raises(FormatError, match="not an ELF"):
        SdkEnclave.parse((vectors / "dcap/bazingajack-seal/BazingaJack.quote.dat").read_bytes())
    with pytest.raises(FormatError, match="not an ELF"):
        SdkEnclave.parse(b"")
    with pytest.raises(FormatError, match="neither signed metadata nor all zero"):
        signed = (vectors / BAZINGA_SIGNED).read_bytes()
        start = SdkEnclave.parse(signed).note_range()[0]
        SdkEnclave.parse(signed[:start] + b"\x01" + signed[start + 1 :])


# --- fuzzing: only FormatError may escape -------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_random_bytes(data: bytes) -> None:
    for parse in (SdkEnclave.parse, Metadata.parse, parse_metadata_blobs):
        try:
            parse(data)
        except FormatError:
            pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 0x2400), st.integers(0, 255)), min_size=1, max_size=6))
def test_fuzz_mutated_elf_header_and_tables(vectors: Path, edits: list[tuple[int, int]]) -> None:
    data = bytearray((vectors / "enclaves/meowlawat+RDS-TEE-SGX__enclave.signed.so").read_bytes())
    for offset, value in edits:
        data[offset] = value
    try:
        enclave = SdkEnclave.parse(bytes(data))
        enclave.measure()
    except FormatError:
        pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 0x1087), st.integers(0, 255)), min_size=1, max_size=6))
def test_fuzz_mutated_metadata_blob(bazinga: tuple[bytes, bytes], edits: list[tuple[int, int]]) -> None:
    blob = bytearray(_blob(bazinga[0]))
    for offset, value in edits:
        blob[offset] = value
    try:
        metadata = Metadata.parse(bytes(blob))
        if metadata.enclave_size <= 1 << 30:  # keep the replay quick; big enclaves are covered by the bench
            replay(metadata, bazinga[1])
    except FormatError:
        pass


# --- loader details no public enclave exercises: DT_TEXTREL and the metadata 1.3 extra page ---------------------


class _Recorder(sdk_measure.Measurement):
    """Records every page the replay adds: (offset, flags, extend)."""

    pages: list[tuple[int, int, bool]] = []

    def __init__(self) -> None:
        super().__init__()
        _Recorder.pages = []

    def add_page(self, offset: int, flags: int, content: bytes, *, extend: bool = True) -> None:
        _Recorder.pages.append((offset, flags, extend))
        super().add_page(offset, flags, content, extend=extend)

    def add_pages(self, offset: int, count: int, flags: int, content: bytes, *, extend: bool = True) -> None:
        _Recorder.pages.extend((offset + 4096 * i, flags, extend) for i in range(count))
        super().add_pages(offset, count, flags, content, extend=extend)


def _recorded_replay(monkeypatch: pytest.MonkeyPatch, metadata: Metadata, data: bytes) -> list[tuple[int, int, bool]]:
    monkeypatch.setattr(sdk_enclave_module, "Measurement", _Recorder)
    replay(metadata, data)
    return list(_Recorder.pages)


def test_text_relocations_make_their_pages_writable(
    bazinga: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    signed_bytes, _ = bazinga
    enclave = SdkEnclave.parse(signed_bytes)
    data = bytearray(signed_bytes)
    dynamic = next(s for s in enclave.elf.sections if s.name == ".dynamic")
    rela = next(s for s in enclave.elf.sections if s.name == ".rela.dyn")
    tags = [struct.unpack_from("<q", data, dynamic.offset + 16 * i)[0] for i in range(dynamic.size // 16)]
    struct.pack_into("<q", data, dynamic.offset + 16 * tags.index(21), 22)  # DT_DEBUG → DT_TEXTREL
    struct.pack_into("<Q", data, rela.offset, 0x5010)  # a relocation inside .text
    struct.pack_into("<Q", data, rela.offset + 24, 0x7FFC)  # one straddling the .text pages 7 and 8
    textrel = bytes(data)
    # independent reference: pyelftools' own reading of .rela.dyn
    with io.BytesIO(textrel) as stream:
        section = ELFFile(stream).get_section_by_name(".rela.dyn")
        expected = set()
        for rel in section.iter_relocations():
            if rel["r_info_type"]:
                expected.add(rel["r_offset"] >> 12)
                if rel["r_offset"] % 4096 > 4088:
                    expected.add((rel["r_offset"] >> 12) + 1)
    facts = SdkEnclave.parse(textrel).elf
    assert facts.has_textrel
    assert relocation_pages(facts, textrel) == expected
    assert {5, 7, 8} <= expected
    pages = {offset: flags for offset, flags, _ in _recorded_replay(monkeypatch, enclave.metadata[0], textrel)}
    assert pages[0x5000] == pages[0x7000] == pages[0x8000] == 0x207  # PT_REG | R | X | W added
    assert pages[0x6000] == pages[0x9000] == 0x205
    plain = {offset: flags for offset, flags, _ in _recorded_replay(monkeypatch, enclave.metadata[0], signed_bytes)}
    assert plain[0x5000] == 0x205


def test_metadata_1_3_adds_the_old_loaders_extra_page(
    bazinga: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    signed_bytes, _ = bazinga
    metadata = SdkEnclave.parse(signed_bytes).metadata[0]
    old = Metadata.parse(_set(metadata.raw, 8, "<Q", (1 << 32) | 3))
    assert len(old.dirs) == 2
    current = _recorded_replay(monkeypatch, metadata, signed_bytes)
    legacy = _recorded_replay(monkeypatch, old, signed_bytes)
    # The top segment (vaddr 0x1e5330, memsz 0x276d0) ends inside page 0x20c000, but rounding its size first
    # reaches 0x20e000: the 1.5-era loader added the zero page 0x20d000 after the last segment.
    last_segment_page = max(i for i, (offset, _, _) in enumerate(current) if offset < 0x20D000)
    assert legacy == current[: last_segment_page + 1] + [(0x20D000, 0x203, True)] + current[last_segment_page + 1 :]
