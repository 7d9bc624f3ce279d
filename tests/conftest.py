"""Shared fixtures. The real SGX vectors are read in place from ``../shared/vectors`` (or ``$SGX_IOT_VECTORS``).

When the folder is absent, tests that need it skip with a message — unless ``SGX_IOT_REQUIRE_VECTORS=1``
(set by ``.ci/run``), in which case they fail, so CI always runs them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _vectors_path() -> Path:
    env = os.environ.get("SGX_IOT_VECTORS")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "vectors"


@pytest.fixture(scope="session")
def vectors() -> Path:
    """The folder of real SGX artefacts (see its README for the expected values)."""
    path = _vectors_path()
    if not (path / "README.md").is_file():
        message = (
            f"real SGX vectors not found at {path}; put the shared folder beside the repository "
            "or set SGX_IOT_VECTORS"
        )
        if os.environ.get("SGX_IOT_REQUIRE_VECTORS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path
