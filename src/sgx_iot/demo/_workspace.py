"""The demo's working folder: a fresh temporary folder (removed afterwards unless kept) or one the user names."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sgx_iot.errors import UsageError


@contextmanager
def workspace(workdir: Path | None, keep: bool) -> Iterator[tuple[Path, bool]]:
    """Yield ``(folder, kept)``.

    Without ``workdir``: a new temporary folder, removed on exit unless ``keep``. With ``workdir``: that folder
    (created if missing; it must be empty, so the demo never mixes with, or overwrites, earlier files), never
    removed.
    """
    if workdir is not None:
        folder = Path(workdir).expanduser()
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise UsageError(f"--workdir {folder} must be an empty folder or not exist yet; choose another one")
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        yield folder.resolve(), True
        return
    folder = Path(tempfile.mkdtemp(prefix="sgx-iot-demo-")).resolve()
    try:
        yield folder, keep
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
