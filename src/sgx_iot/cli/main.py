"""Entry point of ``sgx-iot``: one Typer application with a sub-command group per role."""

from __future__ import annotations

import typer

from sgx_iot import __version__
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
    """Console-script entry point."""
    app()
