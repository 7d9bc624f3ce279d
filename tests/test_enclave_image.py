"""The enclave image definition (docs/enclave-image.md): an independent re-implementation from the document must give
the same MRENCLAVE; the same source bytes give the same MRENCLAVE anywhere; exactly the enclave's files count."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from sgx_iot.enclave import image
from sgx_iot.enclave.config import CONFIG_RELPATH
from sgx_iot.errors import FormatError, UsageError

SRC = Path(__file__).resolve().parent.parent / "src"


def copy_tree(dest: Path) -> Path:
    """A copy of the source root (``src/``) without caches; returns the new source root."""
    shutil.copytree(SRC / "sgx_iot", dest / "sgx_iot", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def spec_mrenclave(root: Path) -> bytes:
    """MRENCLAVE computed from the text of docs/enclave-image.md and SGX_FORMATS §1 alone (no project code)."""
    doc = tomllib.loads((root / "sgx_iot/enclave/enclave.toml").read_text())
    config = {}
    for table in ("identity", "layout"):
        for key, value in doc[table].items():
            config[key] = int(value, 16) if isinstance(value, str) else value
    files = [
        "sgx_iot/__init__.py", "sgx_iot/enclave/__init__.py", "sgx_iot/enclave/program.py",
        "sgx_iot/enclave/protocol.py", "sgx_iot/errors.py", "sgx_iot/sgx/__init__.py", "sgx_iot/sgx/_codec.py",
        "sgx_iot/sgx/attributes.py", "sgx_iot/sgx/ecdsa.py", "sgx_iot/sgx/keybinding.py",
        "sgx_iot/sgx/keyrequest.py", "sgx_iot/sgx/report.py", "sgx_iot/sgx/sealed.py",
    ]  # fmt: skip
    contents = [(path, (root / path).read_bytes()) for path in files]

    def pages_of(n: int) -> int:
        return max(1, -(-n // 4096))

    m = 1
    while True:
        offset, entries = m * 4096, []
        for path, data in contents:
            entries.append({"offset": offset, "path": path, "sha256": hashlib.sha256(data).hexdigest(),
                            "size": len(data)})
            offset += pages_of(len(data)) * 4096
        manifest = json.dumps({"config": config, "entry": "sgx_iot/enclave/program.py", "files": entries,
                               "format": "sgx-iot-enclave-image/1"}, sort_keys=True, separators=(",", ":")).encode()
        if pages_of(len(manifest)) <= m:
            break
        m = pages_of(len(manifest))
    sha = hashlib.sha256(struct.pack("<8sIQ44x", b"ECREATE", config["ssa_frame_size"], config["enclave_size"]))

    def add(off: int, flags: int, content: bytes, measured: bool = True) -> None:
        sha.update(struct.pack("<8sQQ40x", b"EADD", off, flags))
        if measured:
            for pos in range(0, 4096, 256):
                sha.update(struct.pack("<8sQ48x", b"EEXTEND", off + pos) + content[pos : pos + 256])

    def add_bytes(off: int, data: bytes) -> None:
        padded = data.ljust(pages_of(len(data)) * 4096, b"\0")
        for i in range(0, len(padded), 4096):
            add(off + i, 0x201, padded[i : i + 4096])

    add_bytes(0, manifest)
    for (_, data), entry in zip(contents, entries):
        add_bytes(entry["offset"], data)
    entry_offset = next(e["offset"] for e in entries if e["path"] == "sgx_iot/enclave/program.py")
    cursor = offset + 4096
    for i in range(config["heap_pages"]):
        add(cursor + 4096 * i, 0x203, b"", measured=False)
    cursor += 4096 * config["heap_pages"]
    ssa_pages = config["nssa"] * config["ssa_frame_size"]
    for _ in range(config["tcs_count"]):
        cursor += 4096
        for i in range(config["stack_pages"]):
            add(cursor + 4096 * i, 0x203, b"\xcc" * 4096)
        cursor += 4096 * config["stack_pages"]
        tcs = bytearray(4096)
        struct.pack_into("<Q", tcs, 16, cursor + 4096)  # OSSA
        struct.pack_into("<I", tcs, 28, config["nssa"])  # NSSA
        struct.pack_into("<Q", tcs, 32, entry_offset)  # OENTRY
        add(cursor, 0x100, bytes(tcs))
        for i in range(ssa_pages):
            add(cursor + 4096 * (1 + i), 0x203, bytes(4096))
        cursor += 4096 * (1 + ssa_pages)
    return sha.digest()


def test_mrenclave_follows_the_documented_definition() -> None:
    assert image.measure(SRC) == spec_mrenclave(SRC)


def test_same_bytes_same_mrenclave_in_another_folder(tmp_path: Path) -> None:
    built = image.build(SRC)
    copy = image.build(copy_tree(tmp_path / "elsewhere"))
    assert copy.mrenclave == built.mrenclave
    assert copy.manifest == built.manifest
    assert copy.describe() == built.describe()  # no absolute path anywhere
    assert str(tmp_path) not in json.dumps(copy.describe())


def test_installed_source_root_is_the_imported_tree() -> None:
    assert image.installed_source_root() == SRC
    assert image.build_image(SRC) == image.build(SRC).image


def test_trusted_files_are_exactly_what_the_program_imports() -> None:
    code = (
        "import sys, sgx_iot.enclave.program\n"
        "print('\\n'.join(sorted(m.__file__ for n, m in sys.modules.items() if n.split('.')[0] == 'sgx_iot')))"
    )
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}).stdout.split()
    imported = sorted(Path(p).resolve().relative_to(SRC).as_posix() for p in out)
    assert imported == sorted(image.TRUSTED_FILES)
    assert list(image.TRUSTED_FILES) == sorted(image.TRUSTED_FILES)


@pytest.mark.parametrize("rel", image.TRUSTED_FILES)
def test_one_byte_in_any_enclave_file_changes_mrenclave(tmp_path: Path, rel: str) -> None:
    root = copy_tree(tmp_path)
    before = image.measure(root)
    path = root / rel
    path.write_bytes(path.read_bytes() + b" ")
    assert image.measure(root) != before


def test_other_files_and_toml_comments_do_not_count(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    before = image.measure(root)
    for rel in ("sgx_iot/enclave/host.py", "sgx_iot/enclave/loader.py", "sgx_iot/cli/main.py"):
        (root / rel).write_bytes((root / rel).read_bytes() + b"# changed\n")
    (root / "sgx_iot/enclave/extra.txt").write_text("not part of the enclave")
    config = root / CONFIG_RELPATH
    config.write_text("# a new comment\n" + config.read_text().replace("isv_svn = 1", "isv_svn   =   1"))
    assert image.measure(root) == before


def test_every_config_value_counts(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    config = root / CONFIG_RELPATH
    original = config.read_text()
    before = image.measure(root)
    seen = {before}
    for old, new in [("isv_svn = 1", "isv_svn = 2"), ("isv_prod_id = 0", "isv_prod_id = 3"),
                     ("heap_pages = 256", "heap_pages = 257"), ("disable_debug = false", "disable_debug = true"),
                     ('enclave_size = "0x00400000"', 'enclave_size = "0x00800000"')]:  # fmt: skip
        assert old in original
        config.write_text(original.replace(old, new))
        seen.add(image.measure(root))
    assert len(seen) == 6


def test_layout_must_fit_the_enclave_size(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    config = root / CONFIG_RELPATH
    config.write_text(config.read_text().replace("heap_pages = 256", "heap_pages = 2000"))
    with pytest.raises(FormatError) as info:
        image.build(root)
    assert info.value.field == "layout.enclave_size" and "too small" in info.value.reason


def test_regions_are_disjoint_and_inside_the_enclave() -> None:
    built = image.build(SRC)
    spans = sorted((r.offset, r.offset + r.pages * 4096) for r in built.regions)
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end <= start
    assert spans[-1][1] <= built.image.size
    offsets = [page.offset for page in built.image.pages]
    assert offsets == sorted(offsets)  # added in address order
    assert {f.path for f in built.files} == set(image.TRUSTED_FILES)


def test_find_source_root_accepts_repo_src_and_package(tmp_path: Path) -> None:
    repo = SRC.parent
    assert image.find_source_root(repo) == SRC
    assert image.find_source_root(SRC) == SRC
    assert image.find_source_root(SRC / "sgx_iot") == SRC
    with pytest.raises(UsageError, match="not an sgx-iot source tree"):
        image.find_source_root(tmp_path)


def test_missing_enclave_file_is_a_usage_error(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    (root / "sgx_iot/sgx/sealed.py").unlink()
    with pytest.raises(UsageError, match="sgx_iot/sgx/sealed.py is missing"):
        image.build(root)
