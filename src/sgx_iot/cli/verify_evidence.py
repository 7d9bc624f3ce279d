"""`sgx-iot verify evidence`: appraise a gateway's attestation evidence under a policy, offline.

Registered onto the ``verify`` group (``sgx_iot.cli.verify.app``) when imported by ``cli/main.py``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sgx_iot.cli._common import EXIT_VERIFICATION_FAILED, console, handle_errors, print_json, read_input
from sgx_iot.cli.verify import app
from sgx_iot.errors import UsageError
from sgx_iot.verify.appraise import SKIPPED, AppraisalResult, appraise, expect_nonce
from sgx_iot.verify.collateral import CollateralSource, FileCollateral, PccsCollateral
from sgx_iot.verify.evidence import Evidence
from sgx_iot.verify.policy import Policy


@handle_errors
def evidence(
    evidence_file: Annotated[Path, typer.Argument(metavar="EVIDENCE", help="Evidence JSON (sgx-iot-evidence/1).")],
    policy: Annotated[Path, typer.Option("--policy", help="Appraisal policy (TOML).")],
    collateral: Annotated[
        Path | None, typer.Option("--collateral", help="Collateral file (QuoteCollateralV3 JSON).")
    ] = None,
    pccs: Annotated[str | None, typer.Option("--pccs", help="Fetch collateral from this PCCS/PCS (API v4).")] = None,
    now: Annotated[
        int | None, typer.Option("--now", help="Appraisal time, Unix seconds (default: now).", min=0)
    ] = None,
    nonce: Annotated[
        str | None, typer.Option("--nonce", help="Require this nonce (hex), as issued by you.")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Appraise attestation evidence (quote + public key + nonce) under a policy: every check, with its code.

    Without --collateral or --pccs the collateral carried inside the evidence is used. Without --nonce,
    freshness is not checked (say which nonce you issued to check it). Exit 0 affirming, 1 refused, 2 bad input.

    Examples:

        sgx-iot verify evidence evidence.json --policy policy.toml

        sgx-iot verify evidence evidence.json --policy policy.toml --pccs http://127.0.0.1:8081 --nonce 9f3a…

        sgx-iot verify evidence evidence.json --policy policy.toml --collateral collateral.json --json
    """
    if collateral is not None and pccs is not None:
        raise UsageError("give either --collateral or --pccs, not both")
    parsed = Evidence.from_json(read_input(evidence_file, "evidence file"))
    read_input(policy, "policy file")
    loaded = Policy.load(policy)
    source: CollateralSource | None = None
    if collateral is not None:
        read_input(collateral, "collateral file")
        source = FileCollateral(collateral)
    elif pccs is not None:
        source = PccsCollateral(pccs)
    check = None
    if nonce is not None:
        try:
            check = expect_nonce(bytes.fromhex(nonce))
        except ValueError:
            raise UsageError(f"--nonce {nonce!r} is not hexadecimal") from None
    result = appraise(parsed, loaded, now=int(time.time()) if now is None else now, nonce_check=check,
                      collateral=source)
    if json_output:
        print_json(result.to_dict())
    else:
        _render(result)
    if not result.affirming:
        raise typer.Exit(EXIT_VERIFICATION_FAILED)


def _render(result: AppraisalResult) -> None:
    table = Table(title=f"appraisal under policy {result.policy_id[:23]}…", title_justify="left")
    table.add_column("check")
    table.add_column("result")
    table.add_column("details", overflow="fold")
    for c in result.checks:
        mark = "[green]pass[/]" if c.ok else ("[dim]skipped[/]" if c.code == SKIPPED else f"[bold red]{c.code}[/]")
        table.add_row(c.name, mark, c.sentence)
    console.print(table)
    if result.platform == "simulated":
        console.print("[yellow]note:[/] this evidence comes from a [bold]simulated[/] SGX platform")
    if result.affirming:
        console.print(f"[bold green]AFFIRMING[/] {result.sentence}")
    else:
        console.print(f"[bold red]REFUSED[/] {result.code}: {result.sentence}")


app.command("evidence")(evidence)
