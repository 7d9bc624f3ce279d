"""`sgx-iot audit mrenclave --src`: sgx-iot's own enclave measured from a source tree, no build step."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from sgx_iot.cli.main import app
from sgx_iot.enclave.image import measure

REPO_SRC = Path(__file__).resolve().parent.parent / "src"
runner = CliRunner()


def _mrenclave(*args: str) -> tuple[int, dict]:
    result = runner.invoke(app, ["audit", "mrenclave", *args, "--json"])
    return result.exit_code, (json.loads(result.stdout) if result.exit_code == 0 else {})


def test_src_folder_gives_the_image_measurement() -> None:
    code, out = _mrenclave("--src", str(REPO_SRC))
    assert code == 0
    assert out["mrenclave"] == measure(REPO_SRC).hex()
    assert out["kind"] == "sgx-iot"


def test_one_byte_in_an_enclave_file_changes_src_mrenclave(tmp_path: Path) -> None:
    tree = tmp_path / "src"
    shutil.copytree(REPO_SRC, tree, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    _, before = _mrenclave("--src", str(tree))
    program = tree / "sgx_iot" / "enclave" / "program.py"
    program.write_bytes(program.read_bytes() + b"\n")
    _, after = _mrenclave("--src", str(tree))
    assert before["mrenclave"] != after["mrenclave"]


def test_src_from_a_local_git_repository_at_a_revision(tmp_path: Path) -> None:
    repo, rev = _committed_copy_of_the_source(tmp_path)
    code, out = _mrenclave("--src", f"file://{repo}@{rev}")
    assert code == 0
    assert out["mrenclave"] == measure(REPO_SRC).hex()


def _committed_copy_of_the_source(tmp_path: Path) -> tuple[Path, str]:
    """A git repository holding a copy of this source tree under src/, committed; its path and commit."""
    repo = tmp_path / "repo"
    shutil.copytree(REPO_SRC, repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "audited"], check=True)
    rev = subprocess.run([*git[:3], "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    return repo, rev


def test_src_and_another_input_together_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["audit", "mrenclave", "--src", str(REPO_SRC), "--quote", str(tmp_path / "q")])
    assert result.exit_code == 2
    assert "exactly one of --src" in result.output


def test_src_that_is_not_a_source_tree_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["audit", "mrenclave", "--src", str(tmp_path)])
    assert result.exit_code == 2


def test_a_subfolder_of_a_checkout_is_recorded_with_its_commit(tmp_path: Path) -> None:
    repo, rev = _committed_copy_of_the_source(tmp_path)
    code, out = _mrenclave("--src", str(repo / "src"))
    assert code == 0
    assert out["commit"] == rev
