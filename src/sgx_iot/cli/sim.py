"""`sgx-iot sim`: the simulated SGX platform (its folder, TCB state, collateral, PCCS and root certificate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from sgx_iot._fs import atomic_write, atomic_write_text
from sgx_iot.cli._common import console, handle_errors, print_json
from sgx_iot.errors import UsageError
from sgx_iot.platform.sim.collateral import build_collateral
from sgx_iot.platform.sim.info import SIMULATED_NOTICE, platform_info, root_certificate
from sgx_iot.platform.sim.pki import fingerprint
from sgx_iot.platform.sim.store import TCB_STATUSES, PlatformStore, initialise

app = typer.Typer(
    no_args_is_help=True,
    help=(
        "The SIMULATED SGX platform: EINIT/EGETKEY/EREPORT and a quoting enclave in software, with its own "
        "Intel-shaped PKI and collateral. Its folder is --platform, else $SGX_IOT_PLATFORM, else "
        "~/.local/share/sgx-iot/platform (created on first use)."
    ),
)

_PLATFORM_HELP = "Platform folder (default: $SGX_IOT_PLATFORM or ~/.local/share/sgx-iot/platform)."
_STATUSES = ", ".join(TCB_STATUSES)


def _platform_option() -> Any:
    return typer.Option(None, "--platform", help=_PLATFORM_HELP, show_default=False)


def _open(platform: Path | None) -> PlatformStore:
    return PlatformStore.open(platform)


def _render_info(info: dict[str, Any]) -> None:
    console.print(f"[bold yellow]{SIMULATED_NOTICE}[/]", highlight=False)
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    rows = [
        ("kind", "simulated"),
        ("folder", info["folder"]),
        ("TCB status", info["tcb_status"]),
        ("advisories", ", ".join(info["advisories"]) or "(none)"),
        ("PCK revoked", "yes" if info["pck_revoked"] else "no"),
        ("CPUSVN", info["cpu_svn"]),
        ("PCESVN", str(info["pce_svn"])),
        ("FMSPC", info["fmspc"]),
        ("PCE-ID", info["pce_id"]),
        ("PPID", info["ppid"]),
        ("QE", f"MRSIGNER {info['qe']['mrsigner']} ISVPRODID {info['qe']['isv_prod_id']} "
               f"ISVSVN {info['qe']['isv_svn']}"),
        ("root CA", info["root_ca"]["subject"]),
        ("root CA SHA-256", info["root_ca"]["sha256"]),
        ("collateral validity", f"{info['collateral_validity_days']} days"),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, value)
    console.print(table, highlight=False)


@app.command("init")
@handle_errors
def init(
    platform: Path | None = _platform_option(),
    tcb_status: str | None = typer.Option(
        None, "--tcb-status", help=f"TCB status the collateral states (default UpToDate): {_STATUSES}.",
        show_default=False,
    ),
    advisory: list[str] = typer.Option([], "--advisory", help="Advisory ID to attach (repeatable)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing platform (its sealed data is lost)."),
    json_: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Create the simulated platform (secret, PKI, quoting-enclave key), or show the existing one.

    On an existing platform, --tcb-status/--advisory update its TCB state (like `set-tcb`); --force replaces it with a new one: every key it sealed becomes unrecoverable.

    Examples:

      sgx-iot sim init

      sgx-iot sim init --platform /tmp/plat --tcb-status SWHardeningNeeded --advisory INTEL-SA-00615
    """
    store, created = initialise(platform, tcb_status=tcb_status, advisories=advisory, force=force)
    info = platform_info(store)
    if json_:
        print_json({"newly_created": created, **info})
        return
    verb = "initialised in" if created else "already initialised in"
    console.print(f"Simulated SGX platform {verb} {store.folder}", highlight=False)
    _render_info(info)


@app.command("info")
@handle_errors
def info(
    platform: Path | None = _platform_option(),
    json_: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Show the platform's identity (CPUSVN, FMSPC, PPID, QE), TCB state and root CA fingerprint.

    Examples:

      sgx-iot sim info

      sgx-iot sim info --json | jq -r .root_ca.sha256
    """
    data = platform_info(_open(platform))
    if json_:
        print_json(data)
    else:
        _render_info(data)


@app.command("collateral")
@handle_errors
def collateral(
    out: Path = typer.Option(..., "--out", help="File to write (QuoteCollateralV3 JSON).", show_default=False),
    platform: Path | None = _platform_option(),
) -> None:
    """Issue fresh collateral (TCB info, QE identity, CRLs) and write it as dcap-qvl QuoteCollateralV3 JSON.

    Examples:

      sgx-iot sim collateral --out collateral.json
    """
    store = _open(platform)
    issued = build_collateral(store)
    atomic_write_text(out, issued.to_json() + "\n", mode=0o644)
    tcb = store.config.tcb
    console.print(
        f"wrote SIMULATED collateral to {out} (TCB status {tcb.status}, valid {tcb.validity_days} days)",
        highlight=False,
    )


@app.command("pccs")
@handle_errors
def serve_pccs(
    port: int = typer.Option(8081, "--port", min=0, max=65535, help="TCP port."),
    host: str = typer.Option("127.0.0.1", "--host", help="Loopback address to bind."),
    platform: Path | None = _platform_option(),
) -> None:
    """Serve the platform's collateral with the Intel PCS/PCCS v4 paths (loopback only) until Ctrl-C.

    Verifiers point dcap-qvl's get_collateral at http://HOST:PORT (paths under /sgx/certification/v4).

    Examples:

      sgx-iot sim pccs --port 8081

      curl -s 'http://127.0.0.1:8081/sgx/certification/v4/qe/identity' | jq .enclaveIdentity.mrsigner
    """
    store = _open(platform)
    from sgx_iot.platform.sim import pccs  # FastAPI + uvicorn: loaded only for this command

    pccs.check_loopback(host)
    console.print(f"serving SIMULATED collateral of {store.folder} on http://{host}:{port}/sgx/certification/v4",
                  highlight=False)  # fmt: skip
    pccs.serve(store.folder, host=host, port=port)


@app.command("root")
@handle_errors
def root(
    out: Path = typer.Option(..., "--out", help="File to write.", show_default=False),
    fmt: str = typer.Option("", "--format", help="pem or der (default: from the file extension, else pem)."),
    platform: Path | None = _platform_option(),
) -> None:
    """Export the simulation root CA certificate, for verifiers that choose to trust this platform.

    Examples:

      sgx-iot sim root --out sim-root.pem

      sgx-iot sim root --out sim-root.der --format der
    """
    chosen = fmt.lower() or ("der" if out.suffix.lower() in (".der", ".cer", ".crt") else "pem")
    if chosen not in ("pem", "der"):
        raise UsageError(f"unknown --format {fmt!r}; use pem or der")
    store = _open(platform)
    atomic_write(out, root_certificate(store, chosen), mode=0o644)
    console.print(
        f"wrote the SIMULATED root CA ({chosen.upper()}, SHA-256 {fingerprint(store.pki.root_cert)}) to {out}; "
        "trust it for testing only",
        highlight=False,
    )


@app.command("set-tcb")
@handle_errors
def set_tcb(
    status: str = typer.Argument(..., help=f"One of: {_STATUSES}.", show_default=False),
    advisory: list[str] = typer.Option([], "--advisory", help="Advisory ID (repeatable); none clears them."),
    platform: Path | None = _platform_option(),
) -> None:
    """Set the TCB status and advisories the platform's collateral states from now on.

    Quotes are unchanged; verifiers see the new status with freshly issued collateral.

    Examples:

      sgx-iot sim set-tcb OutOfDate --advisory INTEL-SA-00615 --advisory INTEL-SA-00657

      sgx-iot sim set-tcb UpToDate
    """
    store = _open(platform)
    store.set_tcb(status, advisory)
    shown = ", ".join(store.config.tcb.advisories) or "no advisories"
    console.print(f"SIMULATED platform TCB status is now {store.config.tcb.status} ({shown})", highlight=False)


@app.command("revoke-pck")
@handle_errors
def revoke_pck(
    undo: bool = typer.Option(False, "--undo", help="Take the PCK certificate off the CRL again."),
    platform: Path | None = _platform_option(),
) -> None:
    """Revoke the platform's PCK certificate: the PCK CRL lists it, so verifiers refuse its quotes.

    Examples:

      sgx-iot sim revoke-pck

      sgx-iot sim revoke-pck --undo
    """
    store = _open(platform)
    store.set_pck_revoked(not undo)
    state = "revoked (listed on the PCK CRL)" if not undo else "no longer revoked"
    console.print(f"SIMULATED platform PCK certificate is {state}", highlight=False)
