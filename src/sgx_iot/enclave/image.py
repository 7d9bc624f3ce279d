"""THE definition of the sgx-iot enclave image: which bytes, at which offsets, measured how.

Used by the loader (what the platform EINITs), by ``sgx-iot enclave sign`` / ``measure`` and by the auditor; the
precise specification, with every constant, is ``docs/enclave-image.md``. In short, from a *source root* (the
folder that holds ``sgx_iot/``: a repository's ``src/`` or an installed ``site-packages``):

1. the manifest: canonical JSON naming the image format, the configuration (``enclave.toml``) and, for each
   trusted file, its path, size, SHA-256 and page offset; zero-padded to whole pages; R, measured;
2. the trusted files (:data:`TRUSTED_FILES`, sorted), each from a page boundary, zero-padded; R, measured;
3. a guard page (not added), the heap (RW, added, not measured);
4. per thread: a guard page, the stack (RW, measured, 0xCC bytes), the TCS (PT_TCS, measured), the SSA frames
   (RW, measured, zeros).

Nothing depends on time, the machine, file-system order or absolute paths: the same source bytes give the same
MRENCLAVE everywhere.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sgx_iot.enclave.config import CONFIG_RELPATH, EnclaveConfig, load_config
from sgx_iot.errors import FormatError, UsageError
from sgx_iot.sgx.measure import PAGE_SIZE, EnclaveImage, Page, SecInfoFlags

IMAGE_FORMAT = "sgx-iot-enclave-image/1"
ENTRY = "sgx_iot/enclave/program.py"

TRUSTED_FILES: tuple[str, ...] = (
    "sgx_iot/__init__.py",
    "sgx_iot/enclave/__init__.py",
    "sgx_iot/enclave/program.py",
    "sgx_iot/enclave/protocol.py",
    "sgx_iot/errors.py",
    "sgx_iot/sgx/__init__.py",
    "sgx_iot/sgx/_codec.py",
    "sgx_iot/sgx/attributes.py",
    "sgx_iot/sgx/ecdsa.py",
    "sgx_iot/sgx/keybinding.py",
    "sgx_iot/sgx/keyrequest.py",
    "sgx_iot/sgx/report.py",
    "sgx_iot/sgx/sealed.py",
)
"""The enclave program's files: its own modules and every ``sgx_iot`` module they import (packages' ``__init__``
included), relative to the source root, in sorted order. A test checks that this is exactly the set of
``sgx_iot`` modules that importing :data:`ENTRY` loads. Third-party code (``cryptography``) and the interpreter
are not part of the simulated image (under Gramine they are pinned by its manifest)."""

FLAGS_READ = int(SecInfoFlags.PT_REG | SecInfoFlags.R)
FLAGS_DATA = int(SecInfoFlags.PT_REG | SecInfoFlags.R | SecInfoFlags.W)
FLAGS_TCS = int(SecInfoFlags.PT_TCS)
STACK_FILL = 0xCC

_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")
_TCS = struct.Struct("<QQQIIQQQQII")  # tcs_t: reserved0, flags, ossa, cssa, nssa, oentry, reserved1, fs, gs, limits
_ZERO_PAGE = bytes(PAGE_SIZE)
_STACK_PAGE = bytes([STACK_FILL]) * PAGE_SIZE


@dataclass(frozen=True)
class ImageFile:
    """One trusted file of the image."""

    path: str
    size: int
    sha256: str
    offset: int

    def to_dict(self) -> dict[str, Any]:
        return {"offset": self.offset, "path": self.path, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class Region:
    """A named range of the enclave (for ``measure --json`` and the documentation)."""

    name: str
    offset: int
    pages: int
    flags: int
    measured: bool


@dataclass(frozen=True)
class EnclaveBuild:
    """An image built from a source root, with what went into it. ``mrenclave`` is computed once."""

    source_root: Path
    config: EnclaveConfig
    manifest: bytes
    files: tuple[ImageFile, ...]
    regions: tuple[Region, ...]
    image: EnclaveImage

    @functools.cached_property
    def mrenclave(self) -> bytes:
        """MRENCLAVE of :attr:`image` (SHA-256 of its ECREATE/EADD/EEXTEND stream)."""
        return self.image.mrenclave()

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary (no absolute paths, so it is the same on every machine)."""
        return {
            "format": IMAGE_FORMAT,
            "mrenclave": self.mrenclave.hex(),
            "enclave_size": self.image.size,
            "ssa_frame_size": self.image.ssa_frame_size,
            "pages": len(self.image.pages),
            "measured_pages": sum(1 for page in self.image.pages if page.extend),
            "manifest_sha256": hashlib.sha256(self.manifest).hexdigest(),
            "config": self.config.canonical(),
            "files": [f.to_dict() for f in self.files],
            "regions": [
                {"name": r.name, "offset": r.offset, "pages": r.pages, "flags": r.flags, "measured": r.measured}
                for r in self.regions
            ],
        }


def find_source_root(path: Path) -> Path:
    """The source root for ``path``: a folder holding ``sgx_iot/``, a repository holding ``src/sgx_iot/``, or the
    ``sgx_iot`` package folder itself. Raises ``UsageError`` when ``path`` is none of those."""
    path = Path(path)
    for candidate in (path, path / "src", path.parent if path.name == "sgx_iot" else None):
        if candidate is not None and (candidate / ENTRY).is_file():
            return candidate
    raise UsageError(
        f"{path} is not an sgx-iot source tree ({ENTRY} not found in it, in its src/ or as the package itself); "
        "give the repository, its src/ folder or an installed package folder"
    )


def installed_source_root() -> Path:
    """The source root of the ``sgx_iot`` package this interpreter imports."""
    import sgx_iot

    return Path(sgx_iot.__file__).resolve().parent.parent


def build(source_root: Path) -> EnclaveBuild:
    """Build the enclave image of the source tree at ``source_root`` (see the module docstring)."""
    root = Path(source_root)
    config = load_config(root)
    contents = [(rel, _read(root, rel)) for rel in TRUSTED_FILES]
    manifest_pages = 1
    while True:
        files, end = _place(contents, manifest_pages * PAGE_SIZE)
        manifest = _manifest(config, files)
        needed = max(1, -(-len(manifest) // PAGE_SIZE))
        if needed <= manifest_pages:
            break
        manifest_pages = needed
    pages: list[Page] = []
    regions: list[Region] = [Region("manifest", 0, manifest_pages, FLAGS_READ, True)]
    _add_bytes(pages, 0, manifest, manifest_pages)
    for (rel, data), placed in zip(contents, files, strict=True):
        count = max(1, -(-len(data) // PAGE_SIZE))
        regions.append(Region(f"file:{rel}", placed.offset, count, FLAGS_READ, True))
        _add_bytes(pages, placed.offset, data, count)
    entry_offset = next(f.offset for f in files if f.path == ENTRY)
    cursor = end + PAGE_SIZE  # guard page
    regions.append(Region("heap", cursor, config.heap_pages, FLAGS_DATA, False))
    pages.extend(Page(cursor + i * PAGE_SIZE, FLAGS_DATA, _ZERO_PAGE, False) for i in range(config.heap_pages))
    cursor += config.heap_pages * PAGE_SIZE
    ssa_pages = config.nssa * config.ssa_frame_size
    for thread in range(config.tcs_count):
        cursor += PAGE_SIZE  # guard page
        regions.append(Region(f"stack[{thread}]", cursor, config.stack_pages, FLAGS_DATA, True))
        pages.extend(Page(cursor + i * PAGE_SIZE, FLAGS_DATA, _STACK_PAGE) for i in range(config.stack_pages))
        cursor += config.stack_pages * PAGE_SIZE
        tcs_offset, ssa_offset = cursor, cursor + PAGE_SIZE
        tcs = _TCS.pack(0, 0, ssa_offset, 0, config.nssa, entry_offset, 0, 0, 0, 0, 0).ljust(PAGE_SIZE, b"\0")
        regions.append(Region(f"tcs[{thread}]", tcs_offset, 1, FLAGS_TCS, True))
        pages.append(Page(tcs_offset, FLAGS_TCS, tcs))
        regions.append(Region(f"ssa[{thread}]", ssa_offset, ssa_pages, FLAGS_DATA, True))
        pages.extend(Page(ssa_offset + i * PAGE_SIZE, FLAGS_DATA, _ZERO_PAGE) for i in range(ssa_pages))
        cursor = ssa_offset + ssa_pages * PAGE_SIZE
    if cursor > config.enclave_size:
        raise FormatError(CONFIG_RELPATH, "layout.enclave_size", None,
                          f"{config.enclave_size:#x} is too small: the image needs {cursor:#x} bytes")
    image = EnclaveImage(size=config.enclave_size, ssa_frame_size=config.ssa_frame_size, pages=tuple(pages))
    return EnclaveBuild(root, config, manifest, tuple(files), tuple(regions), image)


def build_image(source_root: Path) -> EnclaveImage:
    """The :class:`EnclaveImage` of the source tree at ``source_root`` (what the platform EINITs)."""
    return build(source_root).image


def measure(source_root: Path) -> bytes:
    """MRENCLAVE of the source tree at ``source_root``."""
    return build(source_root).mrenclave


def _read(root: Path, rel: str) -> bytes:
    if not _PATH.fullmatch(rel):
        raise FormatError("EnclaveImage", "path", None, f"{rel!r} is not a plain relative path")
    try:
        return (root / rel).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{root} is not a complete sgx-iot source tree: the enclave file {rel} is missing") from None
    except OSError as exc:
        raise UsageError(f"cannot read the enclave file {root / rel}: {exc.strerror or exc}") from None


def _place(contents: list[tuple[str, bytes]], start: int) -> tuple[list[ImageFile], int]:
    """Offsets of the files laid out from ``start``, each on a page boundary; returns them and the end offset."""
    files, cursor = [], start
    for rel, data in contents:
        files.append(ImageFile(rel, len(data), hashlib.sha256(data).hexdigest(), cursor))
        cursor += max(1, -(-len(data) // PAGE_SIZE)) * PAGE_SIZE
    return files, cursor


def _manifest(config: EnclaveConfig, files: list[ImageFile]) -> bytes:
    doc = {
        "config": config.canonical(),
        "entry": ENTRY,
        "files": [f.to_dict() for f in files],
        "format": IMAGE_FORMAT,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _add_bytes(pages: list[Page], offset: int, data: bytes, count: int) -> None:
    padded = data.ljust(count * PAGE_SIZE, b"\0")
    for i in range(count):
        pages.append(Page(offset + i * PAGE_SIZE, FLAGS_READ, padded[i * PAGE_SIZE : (i + 1) * PAGE_SIZE]))
