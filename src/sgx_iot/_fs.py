"""Files on disk: atomic writes (a file is either its old or its new content, never torn), and reads of files a
user named that fail with one sentence saying which file and why."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from sgx_iot.errors import UsageError


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically and durably.

    Writes a temporary file in the same folder, fsyncs it, renames it over ``path`` and fsyncs the folder,
    so a crash at any instant leaves either the previous file or the complete new one.
    """
    target = Path(path)
    if target.is_dir():
        # Checked first so the error names the user's path, not the temporary file beside it.
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file; give a file name", str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, mode: int = 0o600) -> None:
    """:func:`atomic_write` for UTF-8 text."""
    atomic_write(path, text.encode("utf-8"), mode=mode)


@contextmanager
def open_for_reading(path: str | os.PathLike[str], what: str = "file") -> Iterator[BinaryIO]:
    """``path`` opened for binary reading; ``UsageError`` naming ``what``, the path and the reason otherwise."""
    target = Path(path)
    try:
        with target.open("rb") as handle:
            yield handle
    except FileNotFoundError:
        raise UsageError(f"{what} {target} does not exist; check the path") from None
    except IsADirectoryError:
        raise UsageError(f"{what} {target} is a folder, not a file") from None
    except PermissionError:
        raise UsageError(f"{what} {target} is not readable (permission denied)") from None
    except OSError as exc:
        raise UsageError(f"{what} {target} cannot be read: {exc.strerror or exc}") from None


def read_file(path: str | os.PathLike[str], what: str = "file") -> bytes:
    """The bytes of a file a user named; ``UsageError`` as :func:`open_for_reading` says when it cannot be read."""
    with open_for_reading(path, what) as handle:
        return handle.read()
