"""Entry point of ``sgx-iot``: one Typer application with a sub-command group per role."""

from __future__ import annotations

import sys

import typer

try:  # typer ≥ 0.20 carries its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older typer on plain click
    from click.exceptions import ClickException, NoArgsIsHelpError, UsageError

from sgx_iot import __version__
from rich.markup import escape

from sgx_iot.cli._common import EXIT_USAGE, err_console
from sgx_iot.cli import audit, cloud, demo, enclave, gateway, inspect, sim, verify
from sgx_iot.cli import audit_verify  # noqa: F401
from sgx_iot.cli import verify_evidence  # noqa: F401  (registers `verify evidence`)
from sgx_iot.cli import gateway_net  # noqa: F401

app = typer.Typer(
    name="sgx-iot",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help=(
        "Trustworthy IoT sensor data: keys sealed in an SGX enclave, remote attestation, verification, audit.\n\n"
        "Exit codes: 0 success/valid, 1 verification failed, 2 bad usage or unreadable input."
    ),
)

app.command("inspect")(inspect.run)
app.command("demo")(demo.run)
for group in (verify, audit, sim, enclave, gateway, cloud):
    app.add_typer(group.app, name=group.__name__.rsplit(".", 1)[1])


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sgx-iot {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """sgx-iot command line."""


def main() -> None:
    """Console-script entry point.

    Usage errors found by the argument parser (a missing argument, an unknown option, a value of the wrong type)
    are printed as one line with the command to get help, exit code 2, like every other sgx-iot error.
    """
    def usage_error(message: str) -> None:
        err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_USAGE)

    try:
        code = app(standalone_mode=False, prog_name="sgx-iot")
    except NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx is not None else "see: sgx-iot --help")
        sys.exit(EXIT_USAGE)
    except UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "sgx-iot"
        usage_error(f"{exc.format_message()} (see: {command} --help)")
    except ClickException as exc:
        usage_error(exc.format_message())
    except typer.Abort:
        err_console.print("interrupted")
        sys.exit(130)
    except typer.Exit as exc:  # raised by our commands (fail()) when not caught by the parser
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
