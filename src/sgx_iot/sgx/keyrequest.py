"""EGETKEY key request (``sgx_key_request_t``, 512 B) and its key names / policies.

Layout: SGX_FORMATS.md §4 (linux-sgx ``common/inc/sgx_key.h``). ``key_name`` and ``key_policy`` are plain ints so
that any bytes round-trip; compare them with :class:`KeyName` / :class:`KeyPolicy`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from sgx_iot.sgx._codec import Layout, LayoutStructure, check_fields_match
from sgx_iot.sgx.attributes import Attributes

TSEAL_DEFAULT_FLAGSMASK = 0xFF0000000000000B
"""``sgx_seal_data``'s attribute mask flags: INIT | DEBUG | MODE64BIT and the upper reserved byte."""

TSEAL_DEFAULT_MISCMASK = 0xF0000000
"""``sgx_seal_data``'s MISCSELECT mask."""


class KeyName(enum.IntEnum):
    """Which key EGETKEY derives."""

    EINITTOKEN = 0
    PROVISION = 1
    PROVISION_SEAL = 2
    REPORT = 3
    SEAL = 4


class KeyPolicy(enum.IntFlag):
    """Which identity values the derived key is bound to."""

    MRENCLAVE = 0x1
    MRSIGNER = 0x2
    NOISVPRODID = 0x4
    CONFIGID = 0x8
    ISVFAMILYID = 0x10
    ISVEXTPRODID = 0x20


def key_name_label(value: int) -> str:
    """``"SEAL"`` for 4, or the hex value for an unknown key name."""
    try:
        return KeyName(value).name
    except ValueError:
        return f"0x{value:x}"


def key_policy_names(value: int) -> list[str]:
    """Names of the set policy bits, low to high; unknown bits as hex."""
    names = []
    for bit in range(16):
        flag = 1 << bit
        if value & flag:
            try:
                names.append(KeyPolicy(flag).name or f"0x{flag:x}")
            except ValueError:
                names.append(f"0x{flag:x}")
    return names


@dataclass(frozen=True)
class KeyRequest(LayoutStructure):
    """An EGETKEY request (512 bytes). Defaults are zeros; see :func:`seal_key_request` for sealing defaults."""

    key_name: int = 0
    key_policy: int = 0
    isv_svn: int = 0
    cpu_svn: bytes = bytes(16)
    attribute_mask: Attributes = Attributes()
    key_id: bytes = bytes(32)
    misc_mask: int = 0
    config_svn: int = 0
    reserved1: bytes = bytes(2)
    reserved2: bytes = bytes(434)

    SIZE: ClassVar[int] = 512


KeyRequest.LAYOUT = Layout(
    "KeyRequest",
    512,
    [
        ("key_name", 2, int),
        ("key_policy", 2, int),
        ("isv_svn", 2, int),
        ("reserved1", 2, bytes),
        ("cpu_svn", 16, bytes),
        ("attribute_mask", 16, Attributes),
        ("key_id", 32, bytes),
        ("misc_mask", 4, int),
        ("config_svn", 2, int),
        ("reserved2", 434, bytes),
    ],
)
check_fields_match(KeyRequest, KeyRequest.LAYOUT)


def seal_key_request(
    *,
    key_id: bytes,
    cpu_svn: bytes,
    isv_svn: int,
    config_svn: int = 0,
    key_policy: int = KeyPolicy.MRSIGNER,
) -> KeyRequest:
    """The key request ``sgx_seal_data`` (MRSIGNER) / ``sgx_seal_data_ex`` writes: key name SEAL, attribute mask
    :data:`TSEAL_DEFAULT_FLAGSMASK` / xfrm 0, misc mask :data:`TSEAL_DEFAULT_MISCMASK`. ``key_id`` must be 32 fresh
    random bytes per blob (it makes the key, hence the fixed GCM IV, unique)."""
    return KeyRequest(
        key_name=int(KeyName.SEAL),
        key_policy=int(key_policy),
        isv_svn=isv_svn,
        cpu_svn=cpu_svn,
        attribute_mask=Attributes(TSEAL_DEFAULT_FLAGSMASK, 0),
        key_id=key_id,
        misc_mask=TSEAL_DEFAULT_MISCMASK,
        config_svn=config_svn,
    )
