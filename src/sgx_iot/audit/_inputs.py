"""Files the auditor is given, as a path or already as bytes, read with a one-line reason when they cannot be."""

from __future__ import annotations

import os
from pathlib import Path

from sgx_iot.errors import UsageError

Input = str | os.PathLike[str] | bytes
"""A file given by path, or its bytes."""


def read_input(value: Input | bytearray, what: str) -> bytes:
    """The bytes of ``value`` (returned as is when it already is bytes); ``UsageError`` naming ``what`` and why
    when the file cannot be read."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    path = Path(value)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist; check the path") from None
    except IsADirectoryError:
        raise UsageError(f"{what} {path} is a folder, not a file") from None
    except PermissionError:
        raise UsageError(f"{what} {path} is not readable (permission denied)") from None
    except OSError as exc:
        raise UsageError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None


def read_optional(value: Input | None, what: str) -> bytes | None:
    """:func:`read_input`, or ``None`` when nothing was given."""
    return None if value is None else read_input(value, what)
