"""Sources of the audit: folders and git repositories (tested with a local ``file://`` repository)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sgx_iot.audit.source import checkout, parse_source
from sgx_iot.errors import SgxIotError, UsageError

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(cwd: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "HOME": str(cwd), "PATH": "/usr/bin:/bin"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture()
def repo(tmp_path: Path) -> tuple[Path, str, str]:
    """A repository with two commits: ``first`` (file says v1, tagged v1) and ``second`` (v2)."""
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    (root / "file.txt").write_text("v1\n")
    _git(root, "add", "file.txt")
    _git(root, "commit", "-q", "-m", "first")
    _git(root, "tag", "v1")
    first = _git(root, "rev-parse", "HEAD")
    (root / "file.txt").write_text("v2\n")
    _git(root, "commit", "-q", "-am", "second")
    return root, first, _git(root, "rev-parse", "HEAD")


def test_folder_is_used_in_place(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("x")
    with checkout(str(tmp_path)) as tree:
        assert tree.root == tmp_path.resolve()
        assert tree.commit is None
        assert tree.to_dict() == {"source": str(tmp_path), "commit": None}


def test_file_url_at_tag_and_commit(repo: tuple[Path, str, str]) -> None:
    root, first, second = repo
    with checkout(f"file://{root}@v1") as tree:
        assert (tree.root / "file.txt").read_text() == "v1\n"
        assert tree.commit == first
        cloned = tree.root
    assert not cloned.exists(), "the temporary clone is removed afterwards"
    with checkout(f"file://{root}@{first[:10]}") as tree:
        assert tree.commit == first
    with checkout(f"file://{root}") as tree:
        assert (tree.root / "file.txt").read_text() == "v2\n"
        assert tree.commit == second


def test_local_repository_folder_at_rev(repo: tuple[Path, str, str]) -> None:
    root, first, _ = repo
    with checkout(f"{root}@v1") as tree:
        assert tree.commit == first
        assert tree.root != root


def test_unknown_revision_is_a_usage_error(repo: tuple[Path, str, str]) -> None:
    root, _, _ = repo
    with pytest.raises(UsageError, match="checking out 'nope'"), checkout(f"file://{root}@nope"):
        pass


def test_missing_repository_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cloning"), checkout(f"file://{tmp_path}/absent.git"):
        pass


@pytest.mark.parametrize(
    ("text", "url", "rev"),
    [
        ("https://github.com/org/repo.git", "https://github.com/org/repo.git", None),
        ("https://github.com/org/repo.git@v1.2", "https://github.com/org/repo.git", "v1.2"),
        ("https://user@host.example/org/repo@feature/x", "https://user@host.example/org/repo", "feature/x"),
        ("git@github.com:org/repo.git@main", "git@github.com:org/repo.git", "main"),
        ("ssh://git@host/org/repo", "ssh://git@host/org/repo", None),
    ],
)
def test_parse_git_urls(text: str, url: str, rev: str | None) -> None:
    spec = parse_source(text)
    assert (spec.url, spec.rev, spec.is_git) == (url, rev, True)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("http://example.org/repo.git", "plain http"),
        ("", "empty"),
        ("--upload-pack=evil", "starts with '-'"),
        ("https://example.org/repo.git@--evil", "starts with '-'"),
        ("/no/such/folder", "neither an existing folder"),
    ],
)
def test_parse_refusals(text: str, reason: str) -> None:
    with pytest.raises(UsageError, match=reason):
        parse_source(text)


def test_folder_not_a_repository_with_rev(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a git repository"):
        parse_source(f"{tmp_path}@v1")


@given(st.text(max_size=80))
def test_parse_source_raises_only_project_errors(text: str) -> None:
    try:
        parse_source(text)
    except SgxIotError:
        pass


def test_folder_repository_records_commit_and_dirty(repo: tuple[Path, str, str]) -> None:
    root, _, second = repo
    with checkout(str(root)) as tree:
        assert (tree.commit, tree.dirty) == (second, False)
        assert tree.root == root.resolve()
    (root / "file.txt").write_text("changed\n")
    with checkout(str(root)) as tree:
        assert (tree.commit, tree.dirty) == (second, True)
        assert tree.to_dict()["dirty"] is True
