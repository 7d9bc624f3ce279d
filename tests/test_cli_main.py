"""The `sgx-iot` entry point: parser-level usage errors are one line and exit 2, like every other error."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sgx_iot", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("verify", "quote"), "Missing argument 'QUOTE'. (see: sgx-iot verify quote --help)"),
        (("verify", "quote", "q.bin", "--bogus"), "No such option: --bogus"),
        (("gateway", "send", "--batch", "0"), "Invalid value for '--batch'"),
        (("no-such-command",), "No such command 'no-such-command'"),
    ],
)
def test_parser_usage_errors_are_one_line_with_exit_2(args: tuple[str, ...], expected: str) -> None:
    result = _run(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
    assert "Traceback" not in result.stderr


def test_help_and_version_exit_0() -> None:
    assert _run("--version").stdout.startswith("sgx-iot ")
    result = _run("verify", "--help")
    assert result.returncode == 0 and "ias-report" in result.stdout


def test_no_arguments_shows_help_and_exits_2() -> None:
    result = _run()
    assert result.returncode == 2 and "Usage: sgx-iot" in result.stdout


def test_command_errors_keep_their_exit_codes(tmp_path) -> None:
    missing = tmp_path / "missing.bin"
    result = _run("inspect", str(missing))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: file {missing} does not exist; check the path"
