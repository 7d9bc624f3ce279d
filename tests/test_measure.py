"""The ECREATE/EADD/EEXTEND engine against an independent, hand-packed construction (SGX_FORMATS §1)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_iot.errors import FormatError
from sgx_iot.sgx.measure import (
    SECINFO_FLAGS_ALLOWED,
    EnclaveImage,
    Measurement,
    Page,
    SecInfoFlags,
)


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "little")


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "little")


def _reference(size: int, ssa: int, pages: list[tuple[int, int, bytes, bool]]) -> bytes:
    """MRENCLAVE built byte by byte from the table in SGX_FORMATS §1, without the code under test."""
    stream = b"ECREATE\x00" + _u32(ssa) + _u64(size) + bytes(44)
    for offset, flags, content, extend in pages:
        stream += b"EADD\x00\x00\x00\x00" + _u64(offset) + _u64(flags) + bytes(40)
        if extend:
            for i in range(16):
                stream += b"EEXTEND\x00" + _u64(offset + 256 * i) + bytes(48) + content[256 * i : 256 * (i + 1)]
    return hashlib.sha256(stream).digest()


def test_flag_values_are_architectural() -> None:
    assert (SecInfoFlags.R, SecInfoFlags.W, SecInfoFlags.X) == (1, 2, 4)
    assert (SecInfoFlags.PT_TCS, SecInfoFlags.PT_REG) == (0x100, 0x200)
    assert SECINFO_FLAGS_ALLOWED == 0xFF07


def test_empty_enclave_is_just_ecreate() -> None:
    assert EnclaveImage(0x1000, 1, ()).mrenclave() == _reference(0x1000, 1, [])


def test_tiny_image_matches_hand_packed_stream() -> None:
    text = bytes(range(256)) * 16
    tcs = b"\x01" * 72 + bytes(4096 - 72)
    pages = [
        (0x0, int(SecInfoFlags.PT_REG | SecInfoFlags.R | SecInfoFlags.X), text, True),
        (0x1000, int(SecInfoFlags.PT_REG | SecInfoFlags.R | SecInfoFlags.W), bytes(4096), False),
        (0x3000, int(SecInfoFlags.PT_TCS), tcs, True),
    ]
    image = EnclaveImage(0x4000, 2, tuple(Page(o, f, c, e) for o, f, c, e in pages))
    assert image.mrenclave() == _reference(0x4000, 2, pages)


def test_streaming_engine_equals_image() -> None:
    content = b"\xcc" * 4096
    measurement = Measurement()
    measurement.ecreate(1, 0x2000)
    measurement.eadd(0x1000, 0x203)
    for i in range(16):
        measurement.eextend(0x1000 + 256 * i, content[256 * i : 256 * (i + 1)])
    expected = _reference(0x2000, 1, [(0x1000, 0x203, content, True)])
    assert measurement.eadd_count == 1
    assert measurement.digest() == expected
    assert EnclaveImage(0x2000, 1, (Page(0x1000, 0x203, content),)).mrenclave() == expected


def test_unmeasured_page_content_does_not_matter() -> None:
    a = EnclaveImage(0x2000, 1, (Page(0, 0x203, b"\x00" * 4096, extend=False),)).mrenclave()
    b = EnclaveImage(0x2000, 1, (Page(0, 0x203, b"\xff" * 4096, extend=False),)).mrenclave()
    c = EnclaveImage(0x2000, 1, (Page(0, 0x203, b"\xff" * 4096, extend=True),)).mrenclave()
    assert a == b != c


def test_one_byte_of_a_measured_page_changes_mrenclave() -> None:
    page = bytearray(4096)
    base = EnclaveImage(0x1000, 1, (Page(0, 0x205, bytes(page)),)).mrenclave()
    page[4095] = 1
    assert EnclaveImage(0x1000, 1, (Page(0, 0x205, bytes(page)),)).mrenclave() != base


@pytest.mark.parametrize(
    ("image", "field"),
    [
        (EnclaveImage(0x3000, 1, ()), "size"),
        (EnclaveImage(0x800, 1, ()), "size"),
        (EnclaveImage(0x1000, 1 << 32, ()), "ssa_frame_size"),
        (EnclaveImage(0x2000, 1, (Page(0x800, 0x200, bytes(4096)),)), "pages[0].offset"),
        (EnclaveImage(0x2000, 1, (Page(0x2000, 0x200, bytes(4096)),)), "pages[0].offset"),
        (EnclaveImage(0x2000, 1, (Page(0, 0x200, bytes(4096)), Page(0, 0x200, bytes(4096)))), "pages[1].offset"),
        (EnclaveImage(0x2000, 1, (Page(0, 0x208, bytes(4096)),)), "pages[0].flags"),
        (EnclaveImage(0x2000, 1, (Page(0, 0x10200, bytes(4096)),)), "pages[0].flags"),
        (EnclaveImage(0x2000, 1, (Page(0, 0x200, bytes(100)),)), "pages[0].content"),
    ],
)
def test_invalid_images_are_refused(image: EnclaveImage, field: str) -> None:
    with pytest.raises(FormatError) as info:
        image.mrenclave()
    assert info.value.structure == "EnclaveImage"
    assert info.value.field == field


def test_engine_refuses_out_of_order_and_bad_arguments() -> None:
    m = Measurement()
    with pytest.raises(FormatError, match="ECREATE must come first"):
        m.eadd(0, 0x200)
    m.ecreate(1, 0x1000)
    with pytest.raises(FormatError, match="only once"):
        m.ecreate(1, 0x1000)
    with pytest.raises(FormatError) as info:
        m.eextend(0x10, bytes(256))
    assert info.value.field == "eextend.offset"
    with pytest.raises(FormatError) as info:
        m.eextend(0, bytes(255))
    assert info.value.field == "eextend.chunk"
    with pytest.raises(FormatError) as info:
        m.add_page(0, 0x200, bytes(10))
    assert info.value.field == "add_page.content"
    m.digest()
    with pytest.raises(FormatError, match="finalised"):
        m.digest()
    with pytest.raises(FormatError, match="finalised"):
        m.eadd(0, 0x200)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 3).map(lambda k: 0x1000 << k),
    st.integers(0, 8),
    st.lists(
        st.tuples(
            st.integers(0, 7),
            st.sampled_from([0x100, 0x201, 0x203, 0x205, 0x207]),
            st.binary(min_size=1, max_size=8),
            st.booleans(),
        ),
        max_size=6,
        unique_by=lambda t: t[0],
    ),
)
def test_engine_matches_reference_for_random_images(
    size: int, ssa: int, raw: list[tuple[int, int, bytes, bool]]
) -> None:
    pages = [(idx * 0x1000, flags, (seed * 4096)[:4096], ext) for idx, flags, seed, ext in raw if idx * 0x1000 < size]
    image = EnclaveImage(size, ssa, tuple(Page(*p) for p in pages))
    assert image.mrenclave() == _reference(size, ssa, pages)


@settings(max_examples=30, deadline=None)
@given(
    st.integers(0, 8),
    st.integers(0, 300),
    st.sampled_from([0x201, 0x203, 0x100]),
    st.binary(min_size=1, max_size=16),
    st.booleans(),
)
def test_add_pages_equals_repeated_add_page(first: int, count: int, flags: int, seed: bytes, extend: bool) -> None:
    content = (seed * 4096)[:4096]
    size = 1 << 21
    batched, single = Measurement(), Measurement()
    for m in (batched, single):
        m.ecreate(2, size)
    batched.add_pages(first * 4096, count, flags, content, extend=extend)
    for i in range(count):
        single.add_page((first + i) * 4096, flags, content, extend=extend)
    assert batched.eadd_count == single.eadd_count == count
    assert batched.digest() == single.digest()


def test_add_pages_refuses_pages_outside_the_enclave() -> None:
    m = Measurement()
    m.ecreate(1, 0x4000)
    with pytest.raises(FormatError) as info:
        m.add_pages(0x2000, 3, 0x200, bytes(4096))
    assert info.value.field == "add_pages.offset"
    with pytest.raises(FormatError) as info:
        m.add_pages(0, 1, 0x10000, bytes(4096))
    assert info.value.field == "add_pages.flags"


def test_large_runs_are_streamed_not_allocated() -> None:
    """A 256 MiB heap (65,536 EADD-only pages) and 1,024 measured stack pages stay within a few MiB."""
    import tracemalloc

    tracemalloc.start()
    try:
        m = Measurement()
        m.ecreate(1, 1 << 32)
        m.add_pages(0, 1 << 16, 0x203, bytes(4096), extend=False)
        m.add_pages(1 << 28, 1024, 0x203, b"\xcc" * 4096)
        m.digest()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
