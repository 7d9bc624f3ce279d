"""`sgx-iot demo`: the whole flow in one command (registered by :mod:`sgx_iot.cli.main` from :func:`run`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.rule import Rule
from rich.table import Table

from sgx_iot.cli._common import EXIT_OK, EXIT_VERIFICATION_FAILED, console, err_console, handle_errors, print_json

if TYPE_CHECKING:  # the demo pulls in the cloud service and the gateway: imported only when it runs
    from sgx_iot.demo import DemoResult, Step

_BANNER = {
    "demo": "sgx-iot demo — the full flow on a SIMULATED SGX platform (no SGX hardware involved)",
    "baseline": "sgx-iot demo --baseline — the seed's OpenSSL baseline: a key on disk, no enclave",
}

_EXIT_INTERRUPTED = 130  # the shell's convention for a process stopped by SIGINT
_SUMMARY_NOTE = {"demo": "simulated SGX platform", "baseline": "OpenSSL baseline: no enclave"}


class RichReporter:
    """Renders the demo's progress in sections, like the seed's demo script."""

    def section(self, title: str, intro: str = "") -> None:
        console.print()
        console.print(Rule(f"[bold]{escape(title)}[/]", align="left"))
        if intro:
            console.print(escape(intro), highlight=False)

    def fact(self, label: str, value: str) -> None:
        console.print(f"  [dim]{escape(label)}:[/] {escape(value)}", highlight=False, soft_wrap=True)

    def note(self, text: str) -> None:
        console.print(f"[italic]{escape(text)}[/]", highlight=False)

    def step(self, step: Step) -> None:
        mark = "[bold green]✔[/]" if step.ok else "[bold red]✘[/]"
        console.print(f"{mark} [bold]{escape(step.title)}[/]: {escape(step.actual)}", highlight=False)
        message = step.details.get("message")
        if isinstance(message, str):
            console.print(f"  [dim]{escape(message)}[/]", highlight=False)
        if not step.ok:
            console.print(f"  [red]expected: {escape(step.expected)}[/]", highlight=False)


def _summary(result: DemoResult) -> None:
    console.print()
    table = Table(title=f"Summary ({_SUMMARY_NOTE[result.mode]})", title_justify="left")
    table.add_column("step", style="bold", ratio=3)
    table.add_column("expected", overflow="fold", ratio=4)
    table.add_column("actual", overflow="fold", ratio=4)
    table.add_column("", no_wrap=True, width=1)
    for step in result.steps:
        table.add_row(escape(step.title), escape(step.expected), escape(step.actual),
                      "[green]✔[/]" if step.ok else "[red]✘[/]")  # fmt: skip
    console.print(table)
    failed = result.failures()
    if result.ok:
        console.print(f"[bold green]All {len(result.steps)} expected outcomes happened[/] "
                      f"({result.duration:.1f} s).", highlight=False)  # fmt: skip
    else:
        console.print(f"[bold red]{len(failed)} of {len(result.steps)} expected outcomes did not happen[/]"
                      + (f": {escape(result.error)}" if result.error else ""), highlight=False)
    if result.kept:
        console.print(f"Files kept in {escape(str(result.workdir))}", highlight=False)


@handle_errors
def run(
    workdir: Annotated[
        Path | None,
        typer.Option("--workdir", help="Run in this folder (empty or new; kept). Default: a temporary folder.",
                     file_okay=False),
    ] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the temporary folder and print where it is.")] = False,
    baseline: Annotated[
        bool, typer.Option("--baseline", help="Run the seed's OpenSSL baseline instead (a key on disk, no enclave).")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the steps and outcomes as JSON only.")] = False,
) -> None:
    """Run the whole flow in one command, on the SIMULATED SGX platform, in a temporary folder.

    Creates a simulated platform, signs the enclave, audits its MRENCLAVE from the source tree
    into the cloud's policy, starts the cloud on a loopback port, provisions and registers the
    gateway (challenge, quote, appraisal, EAR), signs Sensor_Data in the enclave and uploads it,
    then shows what the cloud refuses: a swapped public key, a replayed nonce, a modified reading,
    a replayed sequence number, an enclave rebuilt from modified source. Ends with a summary table.
    Needs no network beyond 127.0.0.1 and no services.

    --baseline runs the seed's OpenSSL baseline (a P-256 key in a file, no enclave) and shows that
    the cloud refuses to register the unattested key.

    Exit code 0 when every expected outcome happened, 1 otherwise, 2 for an unusable --workdir.

    Examples:

        sgx-iot demo

        sgx-iot demo --baseline

        sgx-iot demo --workdir /tmp/sgx-iot-demo     # keep every file (keys, SIGSTRUCT, policy, database)

        sgx-iot demo --json | jq '.steps[] | [.title, .actual, .ok]'
    """
    mode = "baseline" if baseline else "demo"
    reporter = None
    if not json_output:
        console.print(f"[bold yellow]{escape(_BANNER[mode])}[/]", highlight=False)
        reporter = RichReporter()
    try:
        from sgx_iot.demo import run_baseline, run_demo

        runner = run_baseline if baseline else run_demo
        result = runner(workdir, keep=keep, reporter=reporter)
    except KeyboardInterrupt:
        err_console.print("interrupted", highlight=False)
        raise typer.Exit(_EXIT_INTERRUPTED) from None
    if json_output:
        print_json(result.to_dict())
    else:
        _summary(result)
    raise typer.Exit(EXIT_OK if result.ok else EXIT_VERIFICATION_FAILED)
