"""The enclave's configuration (``enclave.toml``): identity values for the SIGSTRUCT and the memory layout.

The file ships inside the package (``sgx_iot/enclave/enclave.toml``) and is read from a *source root*, so that the
signer, the loader and the auditor all read the configuration of the tree they measure. Parsing is strict: a
missing, unknown or out-of-range key raises :class:`~sgx_iot.errors.FormatError` naming it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sgx_iot.errors import FormatError
from sgx_iot.sgx.attributes import AttributeFlags, Attributes

CONFIG_RELPATH = "sgx_iot/enclave/enclave.toml"
"""Where the configuration lives, relative to a source root."""

_PAGE = 4096
_U16 = (1 << 16) - 1
_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1

_IDENTITY_KEYS = {
    "isv_prod_id": _U16,
    "isv_svn": _U16,
    "misc_select": _U32,
    "misc_mask": _U32,
    "attributes_flags": _U64,
    "attributes_xfrm": _U64,
    "attribute_mask_flags": _U64,
    "attribute_mask_xfrm": _U64,
}
_LAYOUT_KEYS = {
    "enclave_size": _U64,
    "ssa_frame_size": 16,
    "nssa": 16,
    "tcs_count": 64,
    "stack_pages": 1 << 16,
    "heap_pages": 1 << 20,
}


@dataclass(frozen=True)
class EnclaveConfig:
    """Every value of ``enclave.toml`` (see that file for what each one means)."""

    isv_prod_id: int
    isv_svn: int
    misc_select: int
    misc_mask: int
    attributes_flags: int
    attributes_xfrm: int
    attribute_mask_flags: int
    attribute_mask_xfrm: int
    disable_debug: bool
    enclave_size: int
    ssa_frame_size: int
    nssa: int
    tcs_count: int
    stack_pages: int
    heap_pages: int

    @property
    def attributes(self) -> Attributes:
        """The requested SECS.ATTRIBUTES (SIGSTRUCT.ATTRIBUTES)."""
        return Attributes(self.attributes_flags, self.attributes_xfrm)

    @property
    def attribute_mask(self) -> Attributes:
        """SIGSTRUCT.ATTRIBUTEMASK: the configured mask, plus DEBUG when ``disable_debug``."""
        flags = self.attribute_mask_flags | (int(AttributeFlags.DEBUG) if self.disable_debug else 0)
        return Attributes(flags, self.attribute_mask_xfrm)

    def canonical(self) -> dict[str, Any]:
        """The values as plain JSON-ready data (booleans as ``true``/``false``, integers as integers)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_toml(cls, text: str, *, source: str = "enclave.toml") -> EnclaveConfig:
        """Parse the TOML text strictly; raise ``FormatError`` naming the offending key."""
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise FormatError(source, "(document)", None, f"not valid TOML: {exc}") from None
        _exact_keys(doc, {"identity", "layout"}, source, "")
        identity, layout = doc["identity"], doc["layout"]
        if not isinstance(identity, dict) or not isinstance(layout, dict):
            raise FormatError(source, "identity/layout", None, "must be tables")
        _exact_keys(identity, set(_IDENTITY_KEYS) | {"disable_debug"}, source, "identity.")
        _exact_keys(layout, set(_LAYOUT_KEYS), source, "layout.")
        values: dict[str, Any] = {}
        for key, limit in _IDENTITY_KEYS.items():
            values[key] = _int(identity[key], limit, source, f"identity.{key}")
        if not isinstance(identity["disable_debug"], bool):
            raise FormatError(source, "identity.disable_debug", None, "must be true or false")
        values["disable_debug"] = identity["disable_debug"]
        for key, limit in _LAYOUT_KEYS.items():
            values[key] = _int(layout[key], limit, source, f"layout.{key}")
        config = cls(**values)
        config._check(source)
        return config

    def _check(self, source: str) -> None:
        size = self.enclave_size
        if size < _PAGE or size & (size - 1):
            raise FormatError(source, "layout.enclave_size", None, f"{size:#x} is not a power of two ≥ 0x1000")
        for name in ("ssa_frame_size", "nssa", "tcs_count"):
            if getattr(self, name) < 1:
                raise FormatError(source, f"layout.{name}", None, "must be at least 1")
        if self.attributes_flags & AttributeFlags.DEBUG:
            raise FormatError(source, "identity.attributes_flags", None,
                              "must not request DEBUG; debug mode is chosen at launch time")
        if not self.attributes_flags & AttributeFlags.MODE64BIT:
            raise FormatError(source, "identity.attributes_flags", None, "must request MODE64BIT (0x4)")


def load_config(source_root: Path) -> EnclaveConfig:
    """The configuration of the source tree rooted at ``source_root`` (the folder holding ``sgx_iot/``)."""
    path = Path(source_root) / CONFIG_RELPATH
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(CONFIG_RELPATH, "(file)", None, f"cannot read {path}: {exc}") from None
    return EnclaveConfig.from_toml(text, source=CONFIG_RELPATH)


def _exact_keys(table: dict[str, Any], expected: set[str], source: str, prefix: str) -> None:
    missing = sorted(expected - table.keys())
    unknown = sorted(table.keys() - expected)
    if missing:
        raise FormatError(source, prefix + missing[0], None, "missing key")
    if unknown:
        raise FormatError(source, prefix + unknown[0], None, "unknown key")


def _int(value: Any, limit: int, source: str, key: str) -> int:
    """An integer (or a ``"0x…"`` hexadecimal string) in ``[0, limit]``."""
    if isinstance(value, str):
        text = value.strip().lower().replace("_", "")
        if not text.startswith("0x") or len(text) < 3:
            raise FormatError(source, key, None, f"{value!r} is not a 0x-prefixed hexadecimal number")
        try:
            value = int(text, 16)
        except ValueError:
            raise FormatError(source, key, None, f"{value!r} is not a hexadecimal number") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise FormatError(source, key, None, "must be an integer")
    if not 0 <= value <= limit:
        raise FormatError(source, key, None, f"{value} is outside [0, {limit}]")
    return value
