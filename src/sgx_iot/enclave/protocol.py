"""The ECALL protocol between the gateway host and the enclave process (specification: ``docs/ecall-protocol.md``).

A byte stream (the enclave process's stdin/stdout pipes) carries frames::

    frame = length u32 (little-endian, 6 ≤ length ≤ MAX_FRAME) ‖ body
    body  = version u8 (= 1) ‖ kind u8 ‖ count u32 ‖ count × size u32 ‖ the items' bytes, concatenated

In a request ``kind`` is the :class:`Op`; in a response it is :data:`STATUS_OK` (items = the results) or
:data:`STATUS_ERROR` (items = [code ASCII, message UTF-8]). The enclave answers every request, in order, before it
handles the next one (the host may send the next request before reading an answer: pipelining). The decoders
raise only :class:`~sgx_iot.errors.FormatError`; the enclave answers any malformed request with an error response
and keeps serving. This module is part of the measured enclave image: it imports nothing of sgx-iot but the error
family.
"""

from __future__ import annotations

import enum
import os
import select
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, BinaryIO

from sgx_iot.errors import FormatError, SgxIotError

VERSION = 1
MAX_FRAME = 16 * 1024 * 1024
"""Largest body accepted in either direction (16 MiB)."""
MAX_ITEMS = 65536
"""Most items in one body (e.g. messages of one SIGN batch, plus the sealed key)."""
STATUS_OK = 0
STATUS_ERROR = 1

_LENGTH = struct.Struct("<I")
_BODY = struct.Struct("<BBI")
READ_BUFFER = 1024 * 1024
"""Most bytes one read system call of either end takes: a whole frame of up to this size when it has arrived."""
_IDENTITY = struct.Struct("<32s32sHHHHI16s16s")
ENCLAVE_SPIN = 0.0005
"""Seconds the enclave polls for the next request before it blocks in read(). A wake-up from a blocking read on
another CPU costs tens of microseconds of CPU and latency (more on virtual machines); a host signing batch after
batch sends its next request well within this time, so the enclave never sleeps between them. Bounded: an idle
enclave spins this long once per ECALL, then blocks."""


class Op(enum.IntEnum):
    """ECALL numbers (the ``kind`` of a request)."""

    IDENTITY = 1
    PROVISION = 2
    PUBLIC_KEY = 3
    ATTEST = 4
    SIGN = 5
    SIGN_DIGESTS = 6


class ErrorCode(enum.StrEnum):
    """Codes the enclave puts in error responses (stable: the host maps them to messages and exit codes)."""

    BAD_FRAME = "BAD_FRAME"
    FRAME_TOO_LARGE = "FRAME_TOO_LARGE"
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"
    UNKNOWN_OP = "UNKNOWN_OP"
    BAD_ARGUMENT = "BAD_ARGUMENT"
    UNSEAL_CORRUPT = "UNSEAL_CORRUPT"
    UNSEAL_OTHER_PLATFORM = "UNSEAL_OTHER_PLATFORM"
    UNSEAL_OTHER_SIGNER = "UNSEAL_OTHER_SIGNER"
    UNSEAL_OTHER_ENCLAVE = "UNSEAL_OTHER_ENCLAVE"
    UNSEAL_REFUSED = "UNSEAL_REFUSED"
    PLATFORM_ERROR = "PLATFORM_ERROR"
    INTERNAL = "INTERNAL"


class ChannelClosed(SgxIotError):
    """The other end closed the stream (cleanly between frames, or in the middle of one)."""


class FrameTooLarge(FormatError):
    """A frame announced more than the allowed size; its bytes were skipped, so the stream is still in sync."""

    def __init__(self, length: int, limit: int) -> None:
        self.length = length
        super().__init__("EcallFrame", "length", 0, f"{length} bytes exceeds the {limit}-byte limit")


@dataclass(frozen=True)
class Message:
    """A decoded body: ``kind`` (op or status) and its items."""

    kind: int
    items: list[bytes]


def encode_body(kind: int, items: Sequence[bytes]) -> bytes:
    """The body for ``kind`` and ``items`` (``ValueError`` if it would break the protocol's limits)."""
    count = len(items)
    if count > MAX_ITEMS:
        raise ValueError(f"{count} items exceed the {MAX_ITEMS}-item limit")
    body = b"".join([_BODY.pack(VERSION, kind, count), struct.pack(f"<{count}I", *map(len, items)), *items])
    if len(body) > MAX_FRAME:
        raise ValueError(f"a {len(body)}-byte message exceeds the {MAX_FRAME}-byte limit")
    return body


def decode_body(body: bytes, structure: str = "EcallMessage") -> Message:
    """Parse a body strictly: version 1, item count and sizes consistent with the length, no trailing bytes."""
    body = bytes(body)
    size = len(body)
    if size < _BODY.size:
        raise FormatError(structure, "header", 0, f"needs {_BODY.size} bytes, got {size}")
    version, kind, count = _BODY.unpack_from(body, 0)
    if version != VERSION:
        raise FormatError(structure, "version", 0, f"unsupported protocol version {version} (expected {VERSION})")
    if count > MAX_ITEMS:
        raise FormatError(structure, "count", 2, f"{count} items exceed the {MAX_ITEMS}-item limit")
    data_start = _BODY.size + 4 * count
    if size < data_start:
        raise FormatError(structure, "sizes", _BODY.size, f"{count} item sizes need {4 * count} bytes, "
                          f"{size - _BODY.size} left (truncated)")
    bounds = list(accumulate(struct.unpack_from(f"<{count}I", body, _BODY.size), initial=data_start))
    if bounds[-1] != size:
        field, reason = ("items", "truncated") if bounds[-1] > size else ("end", "unexpected trailing bytes")
        raise FormatError(structure, field, data_start, f"the sizes add up to {bounds[-1] - data_start} bytes, "
                          f"{size - data_start} follow ({reason})")
    return Message(kind, [body[start:end] for start, end in zip(bounds, bounds[1:])])


def encode_error(code: str, message: str) -> bytes:
    """An error response body."""
    return encode_body(STATUS_ERROR, [code.encode("ascii"), message.encode("utf-8")])


def decode_error(items: list[bytes]) -> tuple[str, str]:
    """``(code, message)`` of an error response's items (``FormatError`` if they are not that)."""
    if len(items) != 2:
        raise FormatError("EcallResponse", "items", None, f"an error carries 2 items, not {len(items)}")
    try:
        return items[0].decode("ascii"), items[1].decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("EcallResponse", "error", None, "code or message is not text") from None


Tap = Callable[[str, bytes], None]
"""Observer of every byte crossing the boundary: called with ``"send"`` or ``"receive"`` and the frame bytes."""


class Channel:
    """Frames over a pair of binary streams. Not thread-safe.

    The channel keeps its own read buffer, filled by one ``readinto1`` (or, on a raw stream, one ``readinto``) of up
    to :data:`READ_BUFFER` bytes at a time, so it knows when the next frame has already arrived.
    ``spin`` > 0: when nothing is buffered, poll the reader's file descriptor for up to ``spin`` seconds (see
    :data:`ENCLAVE_SPIN`) before a blocking read of the next frame; the reader must then have a ``fileno()``.
    """

    def __init__(self, reader: BinaryIO, writer: BinaryIO, *, tap: Tap | None = None, spin: float = 0.0) -> None:
        self._read_into: Callable[[memoryview], int | None] = getattr(reader, "readinto1", None) or reader.readinto
        self._chunk = memoryview(bytearray(READ_BUFFER))  # one allocation: a fresh 1 MiB per read would cost more
        self._buffer = bytearray()
        self._writer = writer
        self._tap = tap
        self._spin = spin
        self._poll: Callable[[int], list[tuple[int, int]]] | None = None
        if spin > 0:
            poller = select.poll()
            poller.register(reader.fileno(), select.POLLIN)
            self._poll = poller.poll

    def send(self, body: bytes) -> None:
        """Write one frame holding ``body`` and flush."""
        if len(body) > MAX_FRAME:
            raise ValueError(f"a {len(body)}-byte message exceeds the {MAX_FRAME}-byte limit")
        self.send_raw(_LENGTH.pack(len(body)) + body)

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (tests use it to send malformed frames)."""
        if self._tap is not None:
            self._tap("send", data)
        try:
            view = memoryview(data)
            while view:
                written = self._writer.write(view)
                view = view[written or 0 :]
            self._writer.flush()
        except (BrokenPipeError, ValueError, OSError) as exc:
            raise ChannelClosed(f"the other end of the ECALL channel is gone ({exc})") from None

    def receive(self) -> bytes:
        """The next frame's body. Raises :class:`ChannelClosed` at end of stream and :class:`FrameTooLarge`
        (after skipping the frame's bytes) when the announced length exceeds :data:`MAX_FRAME`.

        Nothing is taken from the buffer until the whole frame has arrived: a receive interrupted while it waits
        (an exception raised in the middle of the read) leaves the stream where it was, for the next receive."""
        if self._poll is not None and not self._buffer:
            self._spin_until_readable(self._poll)
        self._fill_to(_LENGTH.size, at_boundary=True)
        (length,) = _LENGTH.unpack_from(self._buffer)
        if length > MAX_FRAME:
            header = self._take(_LENGTH.size)
            self._discard(length)
            if self._tap is not None:
                self._tap("receive", header)
            raise FrameTooLarge(length, MAX_FRAME)
        self._fill_to(_LENGTH.size + length, at_boundary=False)
        frame = self._take(_LENGTH.size + length)
        if self._tap is not None:
            self._tap("receive", frame)
        return frame[_LENGTH.size :]

    def _spin_until_readable(self, poll: Callable[[int], list[tuple[int, int]]]) -> None:
        deadline = time.perf_counter() + self._spin
        while not poll(0) and time.perf_counter() < deadline:
            pass

    def _fill(self) -> bool:
        """Read what has arrived (blocking until something has) into the buffer; False at end of stream."""
        count = self._read_into(self._chunk)
        if not count:
            return False
        self._buffer += self._chunk[:count]
        return True

    def _fill_to(self, n: int, *, at_boundary: bool) -> None:
        """Read until the buffer holds at least ``n`` bytes (:class:`ChannelClosed` if the stream ends first)."""
        while len(self._buffer) < n:
            if not self._fill():
                where = "between frames" if at_boundary and not self._buffer else "in the middle of a frame"
                raise ChannelClosed(f"the ECALL channel was closed {where}")

    def _take(self, n: int) -> bytes:
        with memoryview(self._buffer) as view:
            data = bytes(view[:n])
        del self._buffer[:n]
        return data

    def _discard(self, n: int) -> None:
        while n:
            if not self._buffer and not self._fill():
                raise ChannelClosed("the ECALL channel was closed in the middle of an oversized frame")
            taken = min(n, len(self._buffer))
            del self._buffer[:taken]
            n -= taken


def encode_identity(identity: object) -> bytes:
    """The 108-byte identity item of an IDENTITY response: MRENCLAVE (32) ‖ MRSIGNER (32) ‖ ISVPRODID u16 ‖
    ISVSVN u16 ‖ CONFIGSVN u16 ‖ reserved u16 ‖ MISCSELECT u32 ‖ ATTRIBUTES (16) ‖ CPUSVN (16).

    ``identity`` is an :class:`sgx_iot.platform.base.EnclaveIdentity` (duck-typed: this module imports no platform).
    """
    i: Any = identity
    return _IDENTITY.pack(i.mrenclave, i.mrsigner, i.isv_prod_id, i.isv_svn, i.config_svn, 0, i.misc_select,
                          i.attributes.to_bytes(), i.cpu_svn)

def decode_identity(item: bytes) -> dict[str, object]:
    """The fields of an identity item (``FormatError`` unless exactly 108 bytes)."""
    if len(item) != _IDENTITY.size:
        raise FormatError("EcallIdentity", "size", 0, f"expected {_IDENTITY.size} bytes, got {len(item)}")
    mrenclave, mrsigner, prod_id, svn, config_svn, _reserved, misc, attributes, cpu_svn = _IDENTITY.unpack(item)
    return {
        "mrenclave": mrenclave,
        "mrsigner": mrsigner,
        "isv_prod_id": prod_id,
        "isv_svn": svn,
        "config_svn": config_svn,
        "misc_select": misc,
        "attributes": attributes,
        "cpu_svn": cpu_svn,
    }


def stdio_channel() -> Channel:
    """The enclave process's channel on its stdin/stdout. From now on stdout carries frames only: anything Python
    prints there goes to stderr instead. Polls for :data:`ENCLAVE_SPIN` before blocking on the next request."""
    frames_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    frames_in = open(sys.stdin.fileno(), "rb", buffering=0, closefd=False)  # noqa: SIM115 - the Channel buffers
    return Channel(frames_in, frames_out, spin=ENCLAVE_SPIN)
