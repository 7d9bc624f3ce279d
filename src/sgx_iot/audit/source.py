"""Where the trusted source code comes from: a local folder, or a git repository at a given revision.

A source is written as the user types it on the command line::

    ./sgx-iot                                   a folder, used in place
    https://github.com/org/repo.git             a git repository, default branch
    https://github.com/org/repo.git@v1.2        … at a tag, branch or commit
    file:///srv/git/repo.git@4b515ed            a local repository (what the tests use)
    git@github.com:org/repo.git@main            scp-like ssh address
    ./checkout@v1.2                             a local git working tree, cloned at that revision

Repositories are cloned with the ``git`` binary into a fresh temporary folder that :func:`checkout` removes on
exit; the commit actually checked out is recorded (``SourceTree.commit``) so a report names exactly what was
audited. Plain ``http://`` is refused: the audited code must come over an authenticated channel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sgx_iot.errors import UsageError

GIT_TIMEOUT_SECONDS = 600
_REMOTE_SCHEMES = ("https://", "ssh://", "git://", "file://")


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source argument: a folder, or a git ``url`` with an optional ``rev``."""

    text: str
    folder: Path | None = None
    url: str | None = None
    rev: str | None = None

    @property
    def is_git(self) -> bool:
        """True when the source must be cloned."""
        return self.url is not None


@dataclass(frozen=True)
class SourceTree:
    """A source tree ready to read: its folder, and the git commit it is at (``None`` for a plain folder)."""

    spec: SourceSpec
    root: Path
    commit: str | None = None
    dirty: bool = False
    """A folder source whose git working tree has uncommitted changes: ``commit`` does not describe it alone."""

    def to_dict(self) -> dict[str, str | bool | None]:
        """JSON-ready description (what the reproducibility report records)."""
        out: dict[str, str | bool | None] = {"source": self.spec.text, "commit": self.commit}
        if self.dirty:
            out["dirty"] = True
        return out


def parse_source(text: str) -> SourceSpec:
    """Interpret a ``DIR``, ``URL`` or ``URL@rev`` argument; raise ``UsageError`` when it is none of them."""
    text = text.strip()
    if not text:
        raise UsageError("the source is empty; give a folder or a git URL (optionally with @rev)")
    if text.startswith("-"):
        raise UsageError(f"source {text!r} starts with '-'; give a folder or a git URL")
    if text.startswith("http://"):
        raise UsageError(f"source {text} uses plain http://, which is not authenticated; use https://")
    if text.startswith(_REMOTE_SCHEMES):
        scheme, rest = text.split("://", 1)
        authority, slash, path = rest.partition("/")
        url, rev = _split_rev(path)
        return SourceSpec(text, url=f"{scheme}://{authority}{slash}{url}", rev=rev)
    if _is_scp_like(text):
        host, path = text.split(":", 1)
        url, rev = _split_rev(path)
        return SourceSpec(text, url=f"{host}:{url}", rev=rev)
    if _is_dir(text):
        return SourceSpec(text, folder=Path(text))
    base, rev = _split_rev(text)
    if rev is not None and _is_dir(base):
        local = Path(base).resolve()
        if not (local / ".git").exists() and not (local / "HEAD").is_file():
            raise UsageError(f"{base} is a folder but not a git repository, so @{rev} cannot be checked out")
        return SourceSpec(text, url=str(local), rev=rev)
    raise UsageError(f"source {text} is neither an existing folder nor a git URL (https://, ssh://, file://)")


@contextmanager
def checkout(source: str | SourceSpec, *, timeout: float = GIT_TIMEOUT_SECONDS) -> Iterator[SourceTree]:
    """Yield the source tree of ``source``; a git source is cloned into a temporary folder removed afterwards.

    Raises ``UsageError`` when ``git`` is missing, the clone fails or the revision does not exist (the message
    carries git's own last line of error output).
    """
    spec = parse_source(source) if isinstance(source, str) else source
    if not spec.is_git:
        assert spec.folder is not None
        root = spec.folder.resolve()
        # A folder inside a git checkout (e.g. its src/) is recorded with the checkout's commit too.
        if not (root / ".git").exists() and (shutil.which("git") is None or not _inside_work_tree(root)):
            yield SourceTree(spec, root)
            return
        commit = _head_commit(root)
        yield SourceTree(spec, root, commit, commit is not None and _is_dirty(root))
        return
    if shutil.which("git") is None:
        raise UsageError("git is not installed; install it, or clone the source yourself and pass the folder")
    assert spec.url is not None
    tmp = Path(tempfile.mkdtemp(prefix="sgx-iot-audit-src-"))
    try:
        root = tmp / "src"
        _git(["clone", "--quiet", "--no-hardlinks", "--", spec.url, str(root)], cwd=tmp, timeout=timeout,
             what=f"cloning {spec.url}")
        if spec.rev is not None:
            _git(["checkout", "--quiet", "--detach", spec.rev, "--"], cwd=root, timeout=timeout,
                 what=f"checking out {spec.rev!r} of {spec.url}")
        yield SourceTree(spec, root, _head_commit(root))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _split_rev(path: str) -> tuple[str, str | None]:
    """Split ``path@rev`` at the last ``@``; a trailing or leading ``@`` is not a revision."""
    base, at, rev = path.rpartition("@")
    if not at or not base or not rev:
        return path, None
    if rev.startswith("-"):
        raise UsageError(f"revision {rev!r} starts with '-'; give a tag, branch or commit")
    return base, rev


def _is_scp_like(text: str) -> bool:
    """``user@host:path`` (git's scp-like syntax), but not a Windows drive or a local path with a colon."""
    head, colon, _ = text.partition(":")
    return bool(colon) and "/" not in head and "@" in head and not _is_dir(head)


def _is_dir(text: str) -> bool:
    try:
        return Path(text).is_dir()
    except (OSError, ValueError):
        return False


def _git(args: list[str], *, cwd: Path, timeout: float, what: str) -> str:
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true", LC_ALL="C")
    try:
        done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise UsageError(f"{what} took longer than {timeout:.0f} s; check the URL and the network") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"git exited with status {done.returncode}"
        raise UsageError(f"{what} failed: {reason}")
    return done.stdout


def _inside_work_tree(folder: Path) -> bool:
    try:
        return _git(["rev-parse", "--is-inside-work-tree"], cwd=folder, timeout=30,
                    what="looking for a git checkout").strip() == "true"
    except UsageError:
        return False


def _is_dirty(root: Path) -> bool:
    """True when tracked files under ``root`` (not elsewhere in its checkout) differ from the commit."""
    try:
        return bool(_git(["status", "--porcelain", "--untracked-files=no", "--", "."], cwd=root, timeout=60,
                         what="reading the working tree status").strip())
    except UsageError:
        return False


def _head_commit(root: Path) -> str | None:
    try:
        return _git(["rev-parse", "HEAD"], cwd=root, timeout=30, what="reading the commit").strip() or None
    except UsageError:
        return None
