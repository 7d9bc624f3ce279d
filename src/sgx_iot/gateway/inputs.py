"""Where ``gateway run`` reads readings from: one reading per line of a file being appended to, a FIFO, or stdin.

Every source is read without threads, with a timeout, so the run loop can flush and retry on time:

* a regular file is **followed** like ``tail -f`` (from where the previous run stopped: the run loop stores the
  byte offset after each stored line in the outbox, keyed by the file's device and inode; a file replaced or
  truncated is read again from its start);
* a FIFO is opened read-write, so it never reports end-of-file when a writer closes it: every later writer is
  read too;
* stdin (``-``) ends at end-of-file.

A line is its bytes without the ``\\n``; empty lines are skipped. A line longer than
:data:`~sgx_iot.verify.readings.MAX_PAYLOAD` cannot be a reading: it is reported as an error and skipped.
"""

from __future__ import annotations

import io
import os
import select
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sgx_iot.errors import UsageError
from sgx_iot.verify.readings import MAX_PAYLOAD

_CHUNK = 256 * 1024
_FOLLOW_POLL = 0.1


@dataclass(frozen=True)
class Line:
    """One input line: its bytes, the source offset just after it (``None`` for streams), or why it is unusable."""

    data: bytes
    end: int | None
    error: str | None = None


class LineSource:
    """Lines from a file descriptor. ``key`` names a resumable source (regular files), ``None`` otherwise."""

    key: str | None = None

    def __init__(self, fd: int, *, name: str, owned: bool, offset: int | None = None) -> None:
        self.name = name
        self._fd = fd
        self._owned = owned
        self._partial = bytearray()
        self._skipping = False
        self._offset = offset  # bytes of the source consumed up to the end of _partial's start
        self.eof = False

    def close(self) -> None:
        if self._owned and self._fd >= 0:
            os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> LineSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, timeout: float) -> list[Line]:
        """The complete lines available within ``timeout`` seconds (possibly none); sets :attr:`eof` at the end."""
        if self.eof:
            return []
        chunk = self._read_chunk(max(0.0, timeout))
        if chunk is None:
            return []
        if chunk == b"":
            self.eof = True
            lines = self._split(b"\n") if self._partial else []
            return lines
        return self._split(chunk)

    def _read_chunk(self, timeout: float) -> bytes | None:
        """Up to one chunk: bytes, ``b""`` at the end, ``None`` if nothing came within ``timeout``."""
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            return None
        try:
            return os.read(self._fd, _CHUNK)
        except BlockingIOError:
            return None

    def _split(self, chunk: bytes) -> list[Line]:
        lines: list[Line] = []
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            if newline < 0:
                break
            piece = chunk[start:newline]
            consumed = len(self._partial) + len(piece) + 1
            if self._offset is not None:
                self._offset += consumed
            if self._skipping or consumed - 1 > MAX_PAYLOAD:
                self._skipping = False
                lines.append(Line(b"", self._offset, f"a line of {self.name} is longer than {MAX_PAYLOAD} bytes; "
                                                     "skipped"))
            elif consumed > 1:
                lines.append(Line(bytes(self._partial) + piece, self._offset))
            self._partial.clear()
            start = newline + 1
        rest = chunk[start:]
        if self._skipping:
            if self._offset is not None:
                self._offset += len(rest)
        else:
            self._partial += rest
            if len(self._partial) > MAX_PAYLOAD:
                if self._offset is not None:
                    self._offset += len(self._partial)
                self._partial.clear()
                self._skipping = True
        return lines


class StreamSource(LineSource):
    """Lines from a Python binary stream without a file descriptor (read blocking, chunk by chunk)."""

    def __init__(self, stream: BinaryIO, *, name: str = "stdin") -> None:
        super().__init__(-1, name=name, owned=False)
        self._stream = stream

    def _read_chunk(self, timeout: float) -> bytes | None:
        return self._stream.read(_CHUNK)


class FollowedFile(LineSource):
    """A regular file followed as it grows (see the module docstring)."""

    def __init__(self, path: Path, *, resume: Callable[[str], int | None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
        self.path = Path(path)
        self._sleep = sleep
        self._resume = resume
        fd, key, offset = self._open()
        super().__init__(fd, name=str(path), owned=True, offset=offset)
        self.key = key

    def _open(self) -> tuple[int, str, int]:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise UsageError(f"the input {self.path} does not exist; create it (the gateway follows it as it grows)") \
                from None
        except OSError as exc:
            raise UsageError(f"cannot open the input {self.path}: {exc.strerror or exc}") from None
        info = os.fstat(fd)
        key = f"file:{self.path.resolve()}:{info.st_dev}:{info.st_ino}"
        offset = (self._resume(key) if self._resume else None) or 0
        if offset > info.st_size:  # truncated since: read it all again
            offset = 0
        os.lseek(fd, offset, os.SEEK_SET)
        return fd, key, offset

    def _read_chunk(self, timeout: float) -> bytes | None:
        data = os.read(self._fd, _CHUNK)
        if data:
            return data
        if self._replaced():
            os.close(self._fd)
            self._fd, self.key, self._offset = self._open()
            self._partial.clear()
            self._skipping = False
            data = os.read(self._fd, _CHUNK)
            if data:
                return data
        self._sleep(min(timeout, _FOLLOW_POLL))
        return None

    def _replaced(self) -> bool:
        try:
            now = os.stat(self.path)
        except OSError:
            return False
        mine = os.fstat(self._fd)
        position = os.lseek(self._fd, 0, os.SEEK_CUR)
        return (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino) or now.st_size < position


def open_source(spec: str, *, resume: Callable[[str], int | None] | None = None) -> LineSource:
    """``-`` (stdin), a FIFO, or a regular file to follow."""
    if spec == "-":
        try:
            fd = sys.stdin.fileno()
        except (AttributeError, ValueError, io.UnsupportedOperation):
            return StreamSource(sys.stdin.buffer)  # an in-memory stdin (tests, embedding): no descriptor
        return LineSource(os.dup(fd), name="stdin", owned=True)
    path = Path(spec)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise UsageError(f"the input {path} does not exist; create it (a file or a FIFO) or use - for stdin") from None
    except OSError as exc:
        raise UsageError(f"cannot use the input {path}: {exc.strerror or exc}") from None
    if stat.S_ISFIFO(mode):
        # Read-write: opening does not wait for a writer, and the last writer closing is not an end-of-file.
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        return LineSource(fd, name=str(path), owned=True)
    if stat.S_ISREG(mode):
        return FollowedFile(path, resume=resume)
    raise UsageError(f"the input {path} is neither a regular file, a FIFO nor - (stdin)")
