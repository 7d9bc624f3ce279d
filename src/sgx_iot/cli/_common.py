"""What every sub-command shares: exit codes, error rendering, JSON output, file reading."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from sgx_iot._fs import read_file
from sgx_iot.errors import FormatError, PlatformError, SgxIotError, UsageError, VerificationError

EXIT_OK = 0
EXIT_VERIFICATION_FAILED = 1
EXIT_USAGE = 2

console = Console()
err_console = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print a one-line error on stderr and exit with ``code`` (``message`` is plain text, never markup)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Map the project's errors to exit codes: verification 1, everything else 2. Never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except VerificationError as exc:
            fail(str(exc), EXIT_VERIFICATION_FAILED)
        except (FormatError, UsageError, PlatformError, SgxIotError) as exc:
            fail(str(exc), EXIT_USAGE)
        except BrokenPipeError:
            # The reader went away (``sgx-iot inspect … | head``): not an error of ours.
            sys.stderr.close()
            raise typer.Exit(EXIT_OK) from None
        except OSError as exc:
            fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "), EXIT_USAGE)

    return wrapper


def read_input(path: Path, what: str) -> bytes:
    """Read a file the user named, or raise ``UsageError`` saying which file and why."""
    return read_file(path, what)


def print_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout (bytes must already be hex strings)."""
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")
