"""`sgx-iot audit verify` and `sgx-iot audit reference`, registered onto the `audit` group.

Thin commands over :mod:`sgx_iot.audit`: the reproducibility report (MRENCLAVE from source vs the signed enclave
vs the evidence), and the reference values the verifier's policy should hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from sgx_iot.audit import ReproducibilityReport, reference_values, verify_mrenclave, write_reference
from sgx_iot.audit.report import SOURCE, Comparison
from sgx_iot.cli._common import EXIT_VERIFICATION_FAILED, console, fail, handle_errors, print_json
from sgx_iot.cli.audit import app
from sgx_iot.cli.verify import facts_table

_SRC = Annotated[str | None, typer.Option("--src", metavar="DIR|URL[@rev]",
                                          help="The trusted source: a folder, or a git URL with an optional @rev.")]
_UNSIGNED = Annotated[Path | None, typer.Option(
    "--unsigned", help="An SDK enclave already rebuilt from source (enclave.so): no build is run.")]
_CONFIG = Annotated[Path | None, typer.Option(
    "--config", help="The SDK enclave's configuration XML (default: the one the source's recipe names).")]
_TIMEOUT = Annotated[float | None, typer.Option("--build-timeout", min=1, help="Seconds the build may take.")]
_JSON = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


@handle_errors
def verify(
    signed_enclave: Annotated[Path, typer.Option(
        "--signed-enclave", help="The signed enclave: an SDK *.signed.so, or the SIGSTRUCT sgx-iot's gateway runs.")],
    src: _SRC = None,
    unsigned: _UNSIGNED = None,
    ias_report: Annotated[Path | None, typer.Option(
        "--ias-report", help="An IAS report (legacy EPID evidence).")] = None,
    quote: Annotated[Path | None, typer.Option("--quote", help="A DCAP quote v3 (binary).")] = None,
    collateral: Annotated[Path | None, typer.Option(
        "--collateral", help="QuoteCollateralV3 JSON for --quote/--evidence (without it: signature checks only).")
    ] = None,
    evidence: Annotated[Path | None, typer.Option("--evidence", help="An sgx-iot evidence bundle (evidence.json).")
                        ] = None,
    config: _CONFIG = None,
    root: Annotated[Path | None, typer.Option(
        "--root", help="Trust this root CA (PEM/DER) for DCAP quotes instead of Intel's, e.g. the simulated one.")
    ] = None,
    now: Annotated[int | None, typer.Option("--now", min=0, help="Verification time, Unix seconds.")] = None,
    build_timeout: _TIMEOUT = None,
    json_output: _JSON = False,
) -> None:
    """Reproducibility report: is the signed (and attested) enclave built from the trusted source?

    An SDK source is rebuilt with its recipe (.auditee.yml, sgx-iot-audit.toml).
    sgx-iot's own source needs no build: its files define the enclave image.

    Examples:

        sgx-iot audit verify --src https://github.com/org/gateway.git@v1.0 \\
            --signed-enclave enclave.signed.so --ias-report ias_report.json

        sgx-iot audit verify --unsigned enclave.so \\
            --signed-enclave enclave.signed.so \\
            --quote quote.dat --config Enclave.config.xml

        sgx-iot audit verify --src . \\
            --signed-enclave gateway-state/enclave.sigstruct \\
            --evidence evidence.json --root sim-root.pem --json

    Exit codes:
    0  everything matches;
    1  something differs (the report says what and where);
    2  unusable input, or the build cannot run
       (then rebuild elsewhere and pass --unsigned FILE).
    """
    report = verify_mrenclave(src, signed_enclave, ias_report=ias_report, quote=quote, collateral=collateral,
                              unsigned=unsigned, evidence=evidence, now=now, enclave_config=config, root_ca=root,
                              build_timeout=build_timeout)
    if json_output:
        print_json(report.to_dict())
    else:
        render_report(report)
    if not report:
        fail(f"reproducibility check failed: {report.problems()[0]}", EXIT_VERIFICATION_FAILED)


@handle_errors
def reference(
    src: _SRC = None,
    signed_enclave: Annotated[Path | None, typer.Option(
        "--signed-enclave", help="The signed enclave to check first; gives MRSIGNER, ISVPRODID and ISVSVN.")] = None,
    unsigned: _UNSIGNED = None,
    config: _CONFIG = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Policy file to write (its enclave table is replaced if it exists); default: print it.")] = None,
    build_timeout: _TIMEOUT = None,
    json_output: _JSON = False,
) -> None:
    """Write the audited enclave's reference values as the enclave table of the verifier's policy.

    With --signed-enclave, the full reproducibility check runs first,
    and nothing is written unless it passes; the values are then
    MRENCLAVE, MRSIGNER, ISVPRODID and ISVSVN (as min_isv_svn),
    so the cloud trusts exactly the audited build.
    Without it (sgx-iot's own enclave only): MRENCLAVE, ISVPRODID and ISVSVN
    from the source.

    Examples:

        sgx-iot audit reference --src . --out policy.toml

        sgx-iot audit reference --src https://github.com/org/sgx-iot.git@v1.0 \\
            --signed-enclave enclave.sigstruct --out policy.toml

        sgx-iot audit reference --unsigned enclave.so \\
            --signed-enclave enclave.signed.so

    Exit codes: 0 written (or printed); 1 not reproduced; 2 unusable input.
    """
    values = reference_values(src, signed_enclave, unsigned=unsigned, enclave_config=config,
                              build_timeout=build_timeout)
    if out is not None:
        policy = write_reference(out, values)
        if json_output:
            print_json({**values.to_dict(), "policy": str(out), "policy_id": policy.id})
        else:
            console.print(f"wrote the reference values to [bold]{escape(str(out))}[/] (policy {escape(policy.id)})",
                          highlight=False)
            console.print(values.to_toml().rstrip(), highlight=False, markup=False)
    elif json_output:
        print_json(values.to_dict())
    else:
        typer.echo(values.to_toml(), nl=False)


def render_report(report: ReproducibilityReport) -> None:
    """Print the report as text (rich: colours on a terminal, plain text otherwise)."""
    console.rule("[bold]Reproducibility report[/]")
    facts = facts_table()
    kind = "Intel SGX SDK enclave" if report.kind == "sdk" else "sgx-iot enclave"
    facts.add_row("enclave", kind)
    for key, value in (report.source or {}).items():
        if value is None:
            continue
        if key == "recipe" and isinstance(value, dict):
            value = f"{value.get('origin')}: {value.get('build') or 'measured from source, no build'}"
        facts.add_row(escape(key), escape(str(value)))
    console.print(facts)

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True)
    for comparison in (report.mrenclave, report.mrsigner, report.isv_prod_id, report.isv_svn):
        _comparison_rows(table, comparison)
    console.print(table)

    checks = facts_table()
    checks.add_row("SIGSTRUCT signature", _ok(report.sigstruct_signature_ok, report.sigstruct_error or "valid"))
    attrs = report.attributes
    debug = ("debug enclave" if attrs.evidence_debug else "production enclave") if attrs.evidence is not None else ""
    checks.add_row("attributes", _ok(attrs.matches, f"SIGSTRUCT flags 0x{attrs.sigstruct.flags:x} under mask "
                                     f"0x{attrs.mask.flags:x}; debug {'allowed' if attrs.debug_allowed else 'refused'}"
                                     + (f"; evidence: {debug}" if debug else "")))
    if report.kind == "sdk":
        detail = "identical outside the metadata note" if not report.differences else \
            f"{len(report.differences)}{'+' if report.differences_truncated else ''} differing range(s)"
        checks.add_row("rebuilt vs signed file", _ok(not report.differences, detail))
        for diff in report.differences:
            checks.add_row("", f"[red]{escape(diff.describe())}[/]")
    mismatch_detail = "agrees" if not report.config_mismatches else f"{len(report.config_mismatches)} mismatch(es)"
    checks.add_row("configuration", _ok(not report.config_mismatches, mismatch_detail))
    for mismatch in report.config_mismatches:
        checks.add_row("", f"[red]{escape(mismatch.describe())}[/]")
    if report.evidence is not None:
        ev = report.evidence
        checks.add_row("evidence", _ok(ev.verified, f"{ev.kind}: " + ("authentic" if ev.verified else str(ev.error))))
        checks.add_row("", escape(ev.checks))
        if ev.status:
            checks.add_row("status", f"{escape(ev.status)} (reported, not judged)")
        if ev.advisory_ids:
            checks.add_row("advisories", escape(", ".join(ev.advisory_ids)))
    console.print(checks)

    if report.report_data is not None:
        rd = report.report_data
        console.rule("[bold]Report data[/]")
        if report.report_data_trusted:
            console.print("The REPORTDATA in the attestation evidence [bold green]CAN[/] be trusted.")
        else:
            reason = escape(report.report_data_untrusted_reason or "")
            console.print(f"The REPORTDATA in the attestation evidence [bold red]CANNOT[/] be trusted: {reason}.")
        console.print(rd.value.hex(), highlight=False)
        if rd.public_key is not None:
            how = {"legacy": "raw x‖y, little-endian halves (original gateway)",
                   "sgx-iot": "SHA-256(SPKI ‖ nonce) binding of the evidence's key"}.get(rd.binding or "", "")
            state = "" if rd.binding_ok else " [bold red](binding does NOT hold)[/]"
            console.print(f"public key it binds ({how}){state}:", highlight=False)
            console.print(rd.public_key.hex(), highlight=False)
    for note in report.notes:
        console.print(f"[cyan]note:[/] {escape(note)}", highlight=False)
    if report:
        console.print("[bold green]MRENCLAVE reproduced: everything matches[/]")
    else:
        console.print("[bold red]NOT reproduced:[/]")
        for problem in report.problems():
            console.print(f"  [red]- {escape(problem)}[/]", highlight=False)


def _comparison_rows(table: Table, comparison: Comparison) -> None:
    verdict = "[green]match[/]" if comparison.matches else "[bold red]MISMATCH[/]"
    table.add_row(f"[bold]{comparison.name}[/]", verdict)
    values = comparison.ordered()
    reference = comparison.get(SOURCE) if SOURCE in comparison.values else (values[0][1] if values else None)
    for party, value in values:
        shown = value.hex() if isinstance(value, bytes) else str(value)
        table.add_row(f"  {party}", shown if value == reference else f"[red]{shown}[/]")
    for party in comparison.missing:
        table.add_row(f"  {party}", "[red](none)[/]")


def _ok(ok: bool, text: Any) -> str:
    """``ok``/``FAIL`` in colour, then ``text`` shown literally (it may quote file contents)."""
    return f"[green]ok[/] {escape(str(text))}" if ok else f"[bold red]FAIL[/] {escape(str(text))}"


app.command("verify")(verify)
app.command("reference")(reference)
