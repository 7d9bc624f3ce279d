"""Files the auditor is given, as a path or already as bytes, read with a one-line reason when they cannot be."""

from __future__ import annotations

import os

from sgx_iot._fs import read_file

Input = str | os.PathLike[str] | bytes
"""A file given by path, or its bytes."""


def read_input(value: Input | bytearray, what: str) -> bytes:
    """The bytes of ``value`` (returned as is when it already is bytes); ``UsageError`` naming ``what`` and why
    when the file cannot be read."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return read_file(value, what)


def read_optional(value: Input | None, what: str) -> bytes | None:
    """:func:`read_input`, or ``None`` when nothing was given."""
    return None if value is None else read_input(value, what)
