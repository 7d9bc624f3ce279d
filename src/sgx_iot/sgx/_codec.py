"""Strict little-endian codecs shared by every SGX structure.

Three tools, raising only :class:`sgx_iot.errors.FormatError` on bad input:

* :class:`Reader` — a sequential cursor (``u16``/``u32``/``u64``/``bytes``) for variable-length data; each read
  names its field, so a truncation reports structure, field and offset.
* :class:`Layout` — the declarative table of a fixed-size structure (name, offset, kind), checked at import time
  to cover every byte exactly once. It decodes bytes into constructor keyword arguments, encodes a dataclass back
  to bytes, and validates field values (used from ``__post_init__``, raising ``ValueError`` for programming
  errors such as a 31-byte MRENCLAVE).
* :class:`LayoutStructure` — the base class giving a layout-described dataclass its ``parse`` / ``to_bytes`` /
  validation.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self, TypeVar

from sgx_iot.errors import FormatError

T = TypeVar("T")

_UINT = {1: "B", 2: "H", 4: "I", 8: "Q"}


class Reader:
    """Sequential little-endian reader over ``data`` that names fields in its errors.

    ``base`` is added to reported offsets, so a reader over a slice reports offsets of the enclosing structure.
    """

    def __init__(self, data: bytes, structure: str, *, base: int = 0) -> None:
        self._data = bytes(data)
        self.structure = structure
        self.offset = 0
        self._base = base

    @property
    def remaining(self) -> int:
        """Bytes not read yet."""
        return len(self._data) - self.offset

    def fail(self, field: str, reason: str, offset: int | None = None) -> FormatError:
        """A ``FormatError`` for ``field`` (at the current offset unless given); the caller raises it."""
        return FormatError(self.structure, field, self._base + (self.offset if offset is None else offset), reason)

    def bytes(self, n: int, field: str) -> bytes:
        """The next ``n`` bytes, or ``FormatError`` if fewer remain."""
        if n < 0 or self.remaining < n:
            raise self.fail(field, f"needs {n} bytes, only {max(self.remaining, 0)} left (truncated)")
        out = self._data[self.offset : self.offset + n]
        self.offset += n
        return out

    def uint(self, size: int, field: str) -> int:
        """The next unsigned little-endian integer of ``size`` bytes (1, 2, 4 or 8)."""
        return int(struct.unpack("<" + _UINT[size], self.bytes(size, field))[0])

    def u8(self, field: str) -> int:
        """The next 1-byte unsigned integer."""
        return self.uint(1, field)

    def u16(self, field: str) -> int:
        """The next 2-byte unsigned integer."""
        return self.uint(2, field)

    def u32(self, field: str) -> int:
        """The next 4-byte unsigned integer."""
        return self.uint(4, field)

    def u64(self, field: str) -> int:
        """The next 8-byte unsigned integer."""
        return self.uint(8, field)

    def rest(self, field: str) -> bytes:
        """All remaining bytes (possibly none)."""
        return self.bytes(self.remaining, field)

    def expect_end(self, field: str = "end") -> None:
        """``FormatError`` if any byte is left unread (trailing data is refused)."""
        if self.remaining:
            raise self.fail(field, f"{self.remaining} unexpected trailing bytes")


def require_size(data: bytes, size: int, structure: str) -> None:
    """``FormatError`` unless ``len(data) == size``."""
    if len(data) != size:
        kind = "truncated" if len(data) < size else "too long"
        reason = f"expected exactly {size} bytes, got {len(data)} ({kind})"
        raise FormatError(structure, "size", min(len(data), size), reason)


def u16(value: int) -> bytes:
    """``value`` as 2 little-endian bytes."""
    return struct.pack("<H", value)


def u32(value: int) -> bytes:
    """``value`` as 4 little-endian bytes."""
    return struct.pack("<I", value)


def u64(value: int) -> bytes:
    """``value`` as 8 little-endian bytes."""
    return struct.pack("<Q", value)


class FixedStructure(Protocol):
    """What a nested fixed-size structure offers to a :class:`Layout`."""

    SIZE: int

    @classmethod
    def parse(cls: type[T], data: bytes) -> T: ...

    def to_bytes(self) -> bytes: ...


@dataclass(frozen=True)
class Field:
    """One field of a fixed layout: ``kind`` is ``"u"`` (unsigned int of ``size`` bytes), ``"b"`` (raw bytes)
    or a nested fixed-size structure class."""

    name: str
    offset: int
    size: int
    kind: Any


class Layout:
    """The field table of a fixed-size structure; see the module docstring."""

    def __init__(self, structure: str, size: int, fields: list[tuple[str, int, Any]]) -> None:
        """``fields`` are ``(name, size, kind)`` in byte order; offsets follow from the sizes.

        ``kind`` is ``int`` (little-endian unsigned), ``bytes`` or a structure class with ``SIZE``.
        """
        self.structure = structure
        self.size = size
        self.fields: list[Field] = []
        offset = 0
        for name, fsize, kind in fields:
            if kind is int:
                code: Any = "u"
                if fsize not in _UINT:
                    raise AssertionError(f"{structure}.{name}: bad int size {fsize}")
            elif kind is bytes:
                code = "b"
            else:
                code = kind
                if kind.SIZE != fsize:
                    raise AssertionError(f"{structure}.{name}: size {fsize} != {kind.__name__}.SIZE")
            self.fields.append(Field(name, offset, fsize, code))
            offset += fsize
        if offset != size:
            raise AssertionError(f"{structure}: fields cover {offset} bytes, not {size}")

    def offset_of(self, name: str) -> int:
        """Byte offset of field ``name``."""
        for f in self.fields:
            if f.name == name:
                return f.offset
        raise KeyError(name)

    def decode(self, data: bytes) -> dict[str, Any]:
        """Constructor keyword arguments from exactly ``size`` bytes (``FormatError`` otherwise)."""
        require_size(data, self.size, self.structure)
        out: dict[str, Any] = {}
        for f in self.fields:
            raw = data[f.offset : f.offset + f.size]
            if f.kind == "u":
                out[f.name] = int.from_bytes(raw, "little")
            elif f.kind == "b":
                out[f.name] = bytes(raw)
            else:
                out[f.name] = f.kind.parse(raw)
        return out

    def encode(self, obj: object) -> bytes:
        """The ``size`` bytes of ``obj`` (a dataclass whose attributes are the fields)."""
        parts = []
        for f in self.fields:
            value = getattr(obj, f.name)
            if f.kind == "u":
                parts.append(value.to_bytes(f.size, "little"))
            elif f.kind == "b":
                parts.append(value)
            else:
                parts.append(value.to_bytes())
        return b"".join(parts)

    def validate(self, obj: object) -> None:
        """``ValueError`` unless every field of ``obj`` has the right type and fits its size."""
        for f in self.fields:
            value = getattr(obj, f.name)
            where = f"{self.structure}.{f.name}"
            if f.kind == "u":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"{where} must be an int, not {type(value).__name__}")
                if not 0 <= value < 1 << (8 * f.size):
                    raise ValueError(f"{where} = {value} does not fit in {f.size} unsigned bytes")
            elif f.kind == "b":
                if not isinstance(value, bytes):
                    raise ValueError(f"{where} must be bytes, not {type(value).__name__}")
                if len(value) != f.size:
                    raise ValueError(f"{where} must be {f.size} bytes, not {len(value)}")
            elif not isinstance(value, f.kind):
                raise ValueError(f"{where} must be a {f.kind.__name__}, not {type(value).__name__}")


class LayoutStructure:
    """Base of the fixed-size structures a :class:`Layout` describes (frozen dataclasses whose fields are the
    layout's; the subclass sets ``SIZE`` and, once defined, ``LAYOUT``).

    Gives every one the same contract: constructing validates the fields (``ValueError``), :meth:`parse` takes
    exactly ``SIZE`` bytes (``FormatError`` otherwise), :meth:`to_bytes` gives them back, and
    ``parse(x.to_bytes()) == x``.
    """

    SIZE: ClassVar[int]
    LAYOUT: ClassVar[Layout]

    def __post_init__(self) -> None:
        self.LAYOUT.validate(self)

    @classmethod
    def parse(cls, data: bytes) -> Self:
        """Exactly ``SIZE`` bytes → the structure (``FormatError`` naming structure, field and offset otherwise)."""
        return cls(**cls.LAYOUT.decode(data))

    def to_bytes(self) -> bytes:
        """The ``SIZE``-byte encoding."""
        return self.LAYOUT.encode(self)


def check_fields_match(cls: type, layout: Layout) -> None:
    """Import-time guard: the dataclass ``cls`` declares exactly the fields of ``layout`` (in any order)."""
    names = {f.name for f in dataclasses.fields(cls)}
    wanted = {f.name for f in layout.fields}
    if names != wanted:
        raise AssertionError(f"{cls.__name__}: dataclass fields {sorted(names ^ wanted)} differ from the layout")
