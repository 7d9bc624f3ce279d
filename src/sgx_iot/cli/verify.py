"""`sgx-iot verify` sub-commands: check real SGX evidence (legacy IAS reports, DCAP quotes).

They verify authenticity and consistency (signatures, chains, validity windows, MRENCLAVE/MRSIGNER agreement, data
signatures) and print TCB/quote statuses and advisories without judging them: judging is an appraisal policy's job.
Exit codes: 0 verified, 1 verification failed, 2 unusable input.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from sgx_iot.cli._common import EXIT_VERIFICATION_FAILED, console, fail, handle_errors, print_json, read_input
from sgx_iot.verify.dcap import DcapVerification, load_root_ca, verify_dcap_quote
from sgx_iot.verify.legacy import LegacyVerdict, Outcome, verify_legacy_gateway

app = typer.Typer(no_args_is_help=True, help="Verify real SGX evidence: IAS reports and DCAP quotes.")

_JSON = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
_STYLE = {Outcome.PASS: "[green]pass[/]", Outcome.FAIL: "[bold red]FAIL[/]", Outcome.INFO: "[cyan]info[/]"}


@app.command("ias-report")
@handle_errors
def ias_report(
    report: Annotated[Path, typer.Argument(help="IAS report: exact response body, or stored {body, headers} JSON.")],
    headers: Annotated[
        Path | None, typer.Option("--headers", help="JSON file of the IAS response headers (for a bare body).")
    ] = None,
    signed_enclave: Annotated[
        Path | None, typer.Option("--signed-enclave", help="The enclave.signed.so the report should be about.")
    ] = None,
    data: Annotated[Path | None, typer.Option("--data", help="A data file signed by the attested key.")] = None,
    signature: Annotated[
        Path | None, typer.Option("--signature", help="Its detached DER ECDSA-SHA256 signature.")
    ] = None,
    json_output: _JSON = False,
) -> None:
    """Check an original sgx-iot gateway end to end: IAS report, signed enclave, public key, signed data.

    Examples:

        sgx-iot verify ias-report ias_report.json

        sgx-iot verify ias-report ias_response_body.exact.json \\
            --headers ias_response_headers.extracted.json

        sgx-iot verify ias-report ias_report.json \\
            --signed-enclave enclave.signed.so \\
            --data Sensor_Data --signature Sensor_Data.signature

    Exit codes:
    0  every check passes (a GROUP_OUT_OF_DATE status or a debug enclave
       is printed, not judged);
    1  a check fails (for example MRSIGNER differs from the signed enclave's);
    2  an input is unusable.
    """
    verdict = verify_legacy_gateway(
        read_input(report, "IAS report"),
        headers=read_input(headers, "headers file") if headers else None,
        signed_enclave=read_input(signed_enclave, "signed enclave") if signed_enclave else None,
        data=read_input(data, "data file") if data else None,
        signature=read_input(signature, "signature file") if signature else None,
    )
    if json_output:
        print_json(verdict.to_dict())
    else:
        _render_legacy(verdict)
    if not verdict.ok:
        failed = [c for c in verdict.checks if c.outcome is Outcome.FAIL]
        fail(f"verification failed: {failed[0].name}: {failed[0].sentence}", EXIT_VERIFICATION_FAILED)


@app.command("quote")
@handle_errors
def quote(
    quote_file: Annotated[Path, typer.Argument(metavar="QUOTE", help="A DCAP quote v3 (binary).")],
    collateral: Annotated[
        Path, typer.Option("--collateral", help="Its collateral: QuoteCollateralV3 JSON (as dcap-qvl writes it).")
    ],
    root: Annotated[
        Path | None, typer.Option("--root", help="Trust this root CA (DER or PEM) instead of Intel's SGX Root CA.")
    ] = None,
    now: Annotated[
        int | None, typer.Option("--now", help="Verification time, Unix seconds (default: now).", min=0)
    ] = None,
    json_output: _JSON = False,
) -> None:
    """Verify a DCAP quote with dcap-qvl: PCK chain, CRLs, TCB info, QE identity, signatures, debug bit.

    Examples:

        sgx-iot verify quote sgx_quote --collateral sgx_quote_collateral.json \\
            --now 1752919277

        sgx-iot verify quote quote.bin --collateral collateral.json \\
            --root sim-root.pem --json

    Prints the TCB status and advisories, not judged, and the enclave identity
    (MRENCLAVE, MRSIGNER, ISVPRODID, ISVSVN, attributes, REPORTDATA).

    Exit codes:
    0  the quote verifies (also with a status such as
       ConfigurationAndSWHardeningNeeded);
    1  refused, with a code saying why (COLLATERAL_EXPIRED, UNTRUSTED_ROOT,
       QUOTE_BAD_SIGNATURE, …);
    2  unusable input.
    """
    result = verify_dcap_quote(
        read_input(quote_file, "quote"),
        read_input(collateral, "collateral"),
        root_ca_der=load_root_ca(read_input(root, "root CA")) if root else None,
        now=int(time.time()) if now is None else now,
    )
    if json_output:
        print_json(result.to_dict())
    else:
        _render_quote(result)


def _render_legacy(verdict: LegacyVerdict) -> None:
    report, body = verdict.report, verdict.report.quote.report_body
    facts = facts_table()
    facts.add_row("report id", escape(report.id))
    facts.add_row("timestamp", report.timestamp.isoformat())
    facts.add_row("quote status", escape(report.isv_enclave_quote_status))
    facts.add_row("advisories", escape(", ".join(report.advisory_ids)) or "none")
    facts.add_row("MRENCLAVE", body.mr_enclave.hex())
    facts.add_row("MRSIGNER", body.mr_signer.hex())
    facts.add_row("ISVPRODID / ISVSVN", f"{body.isv_prod_id} / {body.isv_svn}")
    facts.add_row("attributes", f"flags 0x{body.attributes.flags:x}, xfrm 0x{body.attributes.xfrm:x}")
    facts.add_row("REPORTDATA", body.report_data.hex())
    console.print(facts)
    checks = Table(title="checks", show_header=True, header_style="bold", expand=False)
    checks.add_column("result")
    checks.add_column("check", style="bold")
    checks.add_column("why", overflow="fold")
    for check in verdict.checks:
        checks.add_row(_STYLE[check.outcome], escape(check.name), escape(check.sentence))
    console.print(checks)
    if verdict.public_key_pem:
        console.print("attested public key (from REPORTDATA):")
        console.print(verdict.public_key_pem.rstrip(), highlight=False)
    console.print("[green]verified[/]" if verdict.ok else "[bold red]NOT verified[/]")


def _render_quote(result: DcapVerification) -> None:
    header, body = result.header, result.report_body
    when = datetime.fromtimestamp(result.now, UTC).isoformat()
    table = facts_table()
    table.add_row("verified", f"[green]yes[/]: signatures, PCK chain to {result.root}, collateral valid at {when}")
    table.add_row("TCB status", f"{escape(result.status)} (reported, not judged)")
    table.add_row("advisories", escape(", ".join(result.advisory_ids)) or "none")
    table.add_row("QE status", escape(f"{result.qe_status} {', '.join(result.qe_advisory_ids)}".rstrip()))
    table.add_row("PPID", result.ppid.hex())
    table.add_row(
        "quote", f"version {header.version}, key type {header.att_key_type}, TEE type {header.att_key_data_0}"
    )
    table.add_row("QE / PCE SVN", f"{header.qe_svn} / {header.pce_svn}")
    table.add_row("QE vendor", header.qe_vendor_id.hex())
    table.add_row("MRENCLAVE", body.mr_enclave.hex())
    table.add_row("MRSIGNER", body.mr_signer.hex())
    table.add_row("ISVPRODID / ISVSVN", f"{body.isv_prod_id} / {body.isv_svn}")
    names = ", ".join(body.attributes.flag_names()) or "none"
    table.add_row("attributes", f"flags 0x{body.attributes.flags:x} ({names}), xfrm 0x{body.attributes.xfrm:x}")
    table.add_row("REPORTDATA", body.report_data.hex())
    console.print(table)


def facts_table() -> Table:
    """A borderless two-column table of ``name  value`` rows (names bold, long values folded), for any command."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    return table
