"""ECALL framing (docs/ecall-protocol.md): exact bytes, strict decoding, limits, and a fuzzed decoder."""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_iot.enclave import protocol
from sgx_iot.enclave.protocol import Channel, ChannelClosed, FrameTooLarge, Op, decode_body, encode_body
from sgx_iot.errors import FormatError


def test_body_bytes_are_as_documented() -> None:
    body = encode_body(Op.SIGN, [b"ab", b""])
    assert body == bytes([1, 5]) + struct.pack("<III", 2, 2, 0) + b"ab"
    assert decode_body(body) == protocol.Message(5, [b"ab", b""])


def test_error_body() -> None:
    body = protocol.encode_error("BAD_FRAME", "malformed — request")
    message = decode_body(body)
    assert message.kind == protocol.STATUS_ERROR
    assert protocol.decode_error(message.items) == ("BAD_FRAME", "malformed — request")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"", "header"),
        (bytes([1, 1, 0, 0, 0]), "header"),
        (bytes([2, 1]) + bytes(4), "version"),
        (bytes([1, 1]) + struct.pack("<I", protocol.MAX_ITEMS + 1), "count"),
        (bytes([1, 1]) + struct.pack("<I", 1) + b"\x01\x00", "sizes"),
        (bytes([1, 1]) + struct.pack("<I", 2) + struct.pack("<I", 5), "sizes"),
        (bytes([1, 1]) + struct.pack("<II", 1, 5) + b"abcd", "items"),
        (bytes([1, 1]) + struct.pack("<I", 0) + b"x", "end"),
        (bytes([1, 1]) + struct.pack("<II", 1, 1) + b"ab", "end"),
        (bytes([1, 1]) + struct.pack("<III", 2, 0xFFFFFFFF, 0xFFFFFFFF) + b"ab", "items"),
    ],
)
def test_malformed_bodies_name_the_field(body: bytes, field: str) -> None:
    with pytest.raises(FormatError) as info:
        decode_body(body, "EcallRequest")
    assert info.value.structure == "EcallRequest" and info.value.field == field


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_decoder_raises_only_format_error(data: bytes) -> None:
    try:
        message = decode_body(data)
    except FormatError:
        return
    assert encode_body(message.kind, message.items) == data  # whatever decodes re-encodes to the same bytes


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 255), st.lists(st.binary(max_size=64), max_size=20))
def test_round_trip(kind: int, items: list[bytes]) -> None:
    assert decode_body(encode_body(kind, items)) == protocol.Message(kind, items)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8), st.data())
def test_fuzz_mutated_frames(items: list[bytes], data: st.DataObject) -> None:
    body = bytearray(encode_body(Op.SIGN, items))
    index = data.draw(st.integers(0, len(body) - 1))
    body[index] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(body)))
    try:
        decode_body(bytes(body[:cut]))
    except FormatError:
        pass


def test_limits_are_enforced_when_encoding() -> None:
    with pytest.raises(ValueError, match="item"):
        encode_body(Op.SIGN, [b""] * (protocol.MAX_ITEMS + 1))
    with pytest.raises(ValueError, match="limit"):
        encode_body(Op.SIGN, [bytes(protocol.MAX_FRAME)])


def frames(*bodies: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in bodies)


def test_channel_reads_frames_in_order_and_reports_end() -> None:
    out = io.BytesIO()
    seen: list[tuple[str, bytes]] = []
    channel = Channel(io.BytesIO(frames(b"one", b"", b"three")), out, tap=lambda d, b: seen.append((d, b)))
    assert [channel.receive() for _ in range(3)] == [b"one", b"", b"three"]
    with pytest.raises(ChannelClosed, match="between frames"):
        channel.receive()
    channel.send(b"reply")
    assert out.getvalue() == frames(b"reply")
    assert seen[0] == ("receive", frames(b"one")) and seen[-1] == ("send", frames(b"reply"))


def test_oversized_frame_is_skipped_and_the_stream_stays_in_sync() -> None:
    big = protocol.MAX_FRAME + 1
    stream = io.BytesIO(struct.pack("<I", big) + bytes(big) + frames(b"next"))
    channel = Channel(stream, io.BytesIO())
    with pytest.raises(FrameTooLarge) as info:
        channel.receive()
    assert info.value.length == big and info.value.field == "length"
    assert channel.receive() == b"next"


def test_a_frame_that_already_arrived_is_read_without_spinning() -> None:
    """Pipelining: two requests arrive in one read. The second is taken from the channel's buffer at once, not
    after the enclave's poll for new input (which cannot see buffered bytes) has run out."""
    import os
    import time

    read_end, write_end = os.pipe()
    try:
        os.write(write_end, frames(b"first", b"second"))
        with open(read_end, "rb", buffering=1 << 20, closefd=False) as reader:  # a buffered reader, too
            channel = Channel(reader, io.BytesIO(), spin=30.0)
            assert channel.receive() == b"first"
            start = time.monotonic()
            assert channel.receive() == b"second"
            assert time.monotonic() - start < 10.0  # 30 s if it polled the (empty) pipe
    finally:
        os.close(read_end)
        os.close(write_end)


def test_frames_split_across_reads_are_put_together() -> None:
    class Trickle(io.RawIOBase):
        """A raw stream returning at most 3 bytes per read, as a pipe may."""

        def __init__(self, data: bytes) -> None:
            self.data = data

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
            chunk, self.data = self.data[:3], self.data[3:]
            buffer[: len(chunk)] = chunk
            return len(chunk)

    channel = Channel(Trickle(frames(b"a longer first frame", b"", b"x")), io.BytesIO())  # type: ignore[arg-type]
    assert [channel.receive() for _ in range(3)] == [b"a longer first frame", b"", b"x"]
    with pytest.raises(ChannelClosed, match="between frames"):
        channel.receive()


@pytest.mark.parametrize("data", [b"\x05\x00", frames(b"abcdef")[:-2], struct.pack("<I", 1 << 30) + b"xx"])
def test_truncated_stream_is_closed_channel(data: bytes) -> None:
    with pytest.raises(ChannelClosed):
        Channel(io.BytesIO(data), io.BytesIO()).receive()


def test_identity_item() -> None:
    class Attrs:
        def to_bytes(self) -> bytes:
            return bytes(range(16))

    class Identity:
        mrenclave, mrsigner = b"\x01" * 32, b"\x02" * 32
        isv_prod_id, isv_svn, config_svn, misc_select = 3, 4, 5, 6
        attributes, cpu_svn = Attrs(), b"\x07" * 16

    item = protocol.encode_identity(Identity())
    assert len(item) == 108
    fields = protocol.decode_identity(item)
    assert fields["mrenclave"] == b"\x01" * 32 and fields["isv_svn"] == 4 and fields["attributes"] == bytes(range(16))
    with pytest.raises(FormatError):
        protocol.decode_identity(item[:-1])
