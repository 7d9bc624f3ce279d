"""SGX enclave attributes (``sgx_attributes_t``: FLAGS u64 ‖ XFRM u64, 16 bytes) and their named flag bits."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from sgx_iot.sgx._codec import require_size


class AttributeFlags(enum.IntFlag):
    """Bits of ATTRIBUTES.FLAGS (Intel SDM Vol. 3D, SECS.ATTRIBUTES; linux-sgx ``sgx_attributes.h``)."""

    INIT = 0x1
    DEBUG = 0x2
    MODE64BIT = 0x4
    PROVISIONKEY = 0x10
    EINITTOKEN_KEY = 0x20
    CET = 0x40
    KSS = 0x80
    AEXNOTIFY = 0x400


_KNOWN = {flag.value: flag.name for flag in AttributeFlags if flag.name}
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class Attributes:
    """ATTRIBUTES of an enclave (also used as attribute masks). Any 16 bytes parse and round-trip."""

    flags: int = 0
    xfrm: int = 0

    SIZE: ClassVar[int] = 16

    def __post_init__(self) -> None:
        for name in ("flags", "xfrm"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MASK64:
                raise ValueError(f"Attributes.{name} must be an unsigned 64-bit int, got {value!r}")
        # IntFlag values are ints, but keep the field a plain int so equality and repr stay simple.
        object.__setattr__(self, "flags", int(self.flags))
        object.__setattr__(self, "xfrm", int(self.xfrm))

    @classmethod
    def parse(cls, data: bytes) -> Attributes:
        """Exactly 16 bytes → ``Attributes`` (``FormatError`` otherwise)."""
        require_size(data, cls.SIZE, "Attributes")
        return cls(int.from_bytes(data[:8], "little"), int.from_bytes(data[8:16], "little"))

    def to_bytes(self) -> bytes:
        """The 16-byte little-endian encoding."""
        return self.flags.to_bytes(8, "little") + self.xfrm.to_bytes(8, "little")

    @property
    def debug(self) -> bool:
        """True when the DEBUG bit is set (the enclave's memory can be read by a debugger)."""
        return bool(self.flags & AttributeFlags.DEBUG)

    @property
    def mode64bit(self) -> bool:
        """True for a 64-bit enclave."""
        return bool(self.flags & AttributeFlags.MODE64BIT)

    def has(self, flag: AttributeFlags) -> bool:
        """True when every bit of ``flag`` is set in FLAGS."""
        return self.flags & flag == flag

    def flag_names(self) -> list[str]:
        """Names of the set FLAGS bits, low to high; unknown bits appear as hex (``"0x100"``)."""
        names = []
        for bit in range(64):
            value = 1 << bit
            if self.flags & value:
                names.append(_KNOWN.get(value, f"0x{value:x}"))
        return names

    def __and__(self, mask: Attributes) -> Attributes:
        """Bitwise AND of flags and xfrm (applying an attribute mask)."""
        return Attributes(self.flags & mask.flags, self.xfrm & mask.xfrm)
