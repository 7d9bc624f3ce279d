"""`sgx-iot audit` sub-commands: where an enclave's MRENCLAVE comes from, and whether it is the audited one.

This module defines the group (``app``) and ``audit mrenclave``; ``audit verify`` and ``audit reference`` are
registered onto the same ``app`` by :mod:`sgx_iot.cli.audit_verify`. Each input kind of ``audit mrenclave`` has
its own small reader returning a :class:`MrenclaveReading`, so another kind is one more reader and option.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from sgx_iot.cli._common import EXIT_VERIFICATION_FAILED, console, fail, handle_errors, print_json, read_input
from sgx_iot.cli.verify import facts_table
from sgx_iot.errors import FormatError, UsageError
from sgx_iot.sgx.dcap_quote import DcapQuote
from sgx_iot.sgx.epid_quote import EpidQuote
from sgx_iot.sgx.report import ReportBody
from sgx_iot.sgx.sdk_enclave import SdkEnclave
from sgx_iot.verify.ias import IasReport

app = typer.Typer(
    no_args_is_help=True,
    help="Audit an enclave: compute or read its MRENCLAVE, and check it against its trusted source.",
)

_JSON = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


@dataclass(frozen=True)
class MrenclaveReading:
    """What ``audit mrenclave`` found: the MRENCLAVE, where from, identity fields, and per-blob replays."""

    source: str
    file: str
    mrenclave: bytes
    identity: dict[str, Any] = field(default_factory=dict)
    blobs: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    @property
    def consistent(self) -> bool:
        """False when a replayed metadata blob does not reproduce its SIGSTRUCT's ENCLAVEHASH."""
        return all(blob["matches"] for blob in self.blobs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (bytes as hex)."""
        out: dict[str, Any] = {"source": self.source, "file": self.file, "mrenclave": self.mrenclave.hex()}
        out.update(self.identity)
        if self.blobs:
            out["blobs"] = self.blobs
            out["matches_sigstruct"] = self.consistent
        if self.note:
            out["note"] = self.note
        return out


def read_signed_binary(path: Path) -> MrenclaveReading:
    """Replay every metadata blob of a signed SDK enclave (SGX_FORMATS §2.4) next to its SIGSTRUCT."""
    enclave = SdkEnclave.parse(read_input(path, "signed enclave"))
    if not enclave.signed:
        raise UsageError(f"{path} is an unsigned enclave (its .note.sgxmeta metadata is all zero), so it has no "
                         "MRENCLAVE yet; give the signed enclave (*.signed.so)")
    results = enclave.measure()
    css = enclave.sigstruct
    blobs = [{"index": r.index, "metadata_version": r.version, "replayed_mrenclave": r.mrenclave.hex(),
              "sigstruct_enclavehash": r.enclave_hash.hex(), "matches": r.matches} for r in results]
    identity = {"mrsigner": css.mrsigner.hex(), "isv_prod_id": css.isv_prod_id, "isv_svn": css.isv_svn}
    return MrenclaveReading("signed-binary", str(path), results[0].mrenclave, identity, blobs,
                            "replayed from the enclave's metadata; the SIGSTRUCT signature is not checked here")


def read_ias_response(path: Path) -> MrenclaveReading:
    """MRENCLAVE from an IAS report's ``isvEnclaveQuoteBody`` (bare body or stored ``{"body", "headers"}``)."""
    report = IasReport.parse(read_input(path, "IAS response"))
    identity = _identity(report.quote.report_body)
    identity["quote_status"] = report.isv_enclave_quote_status
    return MrenclaveReading("ias-response", str(path), report.quote.report_body.mr_enclave, identity,
                            note="read from the report; its signature is not checked (use: sgx-iot verify ias-report)")


def read_quote(path: Path) -> MrenclaveReading:
    """MRENCLAVE from a DCAP quote v3 or an EPID quote (full, or its 432-byte body)."""
    data = read_input(path, "quote")
    if len(data) < 4:
        raise FormatError("quote", "version", 0, f"{len(data)} bytes is too short for a quote")
    version, _ = struct.unpack_from("<HH", data)
    if version in (3, 4, 5):
        body = DcapQuote.parse(data).report_body
        kind = "dcap-quote"
    elif version in (1, 2):
        body = EpidQuote.parse(data).report_body
        kind = "epid-quote"
    else:
        raise FormatError("quote", "version", 0, f"version {version} is neither a DCAP (3) nor an EPID (1, 2) quote")
    return MrenclaveReading(kind, str(path), body.mr_enclave, _identity(body),
                            note="read from the quote; its signatures are not checked (use: sgx-iot verify quote)")


def read_source(spec: str) -> MrenclaveReading:
    """MRENCLAVE of sgx-iot's own enclave built from a trusted source tree (folder or git ``URL[@rev]``)."""
    from sgx_iot.audit import mrenclave_from_source

    measured = mrenclave_from_source(spec)
    return MrenclaveReading("src", spec, measured.mrenclave, measured.identity(), note=measured.note())


def _identity(body: ReportBody) -> dict[str, Any]:
    return {"mrsigner": body.mr_signer.hex(), "isv_prod_id": body.isv_prod_id, "isv_svn": body.isv_svn,
            "debug": body.attributes.debug}


_READERS: dict[str, Callable[[Any], MrenclaveReading]] = {
    "--src": read_source,
    "--signed-binary": read_signed_binary,
    "--ias-response": read_ias_response,
    "--quote": read_quote,
}


@app.command("mrenclave")
@handle_errors
def mrenclave(
    src: Annotated[str | None, typer.Option(
        "--src", metavar="DIR|URL[@rev]", help="sgx-iot's trusted enclave source: a folder or a git URL@rev.")] = None,
    signed_binary: Annotated[Path | None, typer.Option(
        "--signed-binary", help="A signed Intel SGX SDK enclave (*.signed.so): its metadata is replayed.")] = None,
    ias_response: Annotated[Path | None, typer.Option(
        "--ias-response", help="An IAS report: the exact body or the stored {\"body\", \"headers\"} JSON.")] = None,
    quote: Annotated[Path | None, typer.Option(
        "--quote", help="A DCAP quote v3 or an EPID quote (binary).")] = None,
    json_output: _JSON = False,
) -> None:
    """Print an enclave's MRENCLAVE, from exactly one of a source tree, a signed enclave, an IAS report or a quote.

    Examples:

        sgx-iot audit mrenclave --src ./src

        sgx-iot audit mrenclave --src https://example.org/sgx-iot.git@v0.1.0

        sgx-iot audit mrenclave --signed-binary enclave.signed.so

        sgx-iot audit mrenclave --ias-response ias_report.json --json

        sgx-iot audit mrenclave --quote quote.dat

    A signed enclave's MRENCLAVE is recomputed by replaying each of its metadata
    blobs (no SGX SDK needed), and compared with its SIGSTRUCT's ENCLAVEHASH.
    Reports and quotes are only read here, not verified (see `sgx-iot verify`).

    Exit codes: 0 printed; 1 a replay differs from its SIGSTRUCT; 2 bad input.
    """
    given = {name: value for name, value in (("--src", src), ("--signed-binary", signed_binary),
                                             ("--ias-response", ias_response), ("--quote", quote))
             if value is not None}
    if len(given) != 1:
        raise UsageError("give exactly one of --src, --signed-binary, --ias-response or --quote"
                         + (f" (got {', '.join(given)})" if given else ""))
    (option, path), = given.items()
    reading = _READERS[option](path)
    if json_output:
        print_json(reading.to_dict())
    else:
        _render(reading)
    if not reading.consistent:
        bad = next(b for b in reading.blobs if not b["matches"])
        fail(f"MRENCLAVE_MISMATCH: metadata blob {bad['index']} (version {bad['metadata_version']}) replays to "
             f"{bad['replayed_mrenclave']}, but its SIGSTRUCT says {bad['sigstruct_enclavehash']}",
             EXIT_VERIFICATION_FAILED)


def _render(reading: MrenclaveReading) -> None:
    table = facts_table()
    table.add_row("MRENCLAVE", reading.mrenclave.hex())
    table.add_row("from", escape(f"{reading.source} {reading.file}"))
    for key, value in reading.identity.items():
        if value is not None:
            table.add_row(escape(key), escape(str(value)))
    console.print(table)
    if reading.blobs:
        blobs = Table("blob", "metadata", "replayed MRENCLAVE", "SIGSTRUCT ENCLAVEHASH")
        for blob in reading.blobs:
            verdict = "[green]= match[/]" if blob["matches"] else "[bold red]≠ MISMATCH[/]"
            blobs.add_row(str(blob["index"]), blob["metadata_version"], blob["replayed_mrenclave"],
                          f"{blob['sigstruct_enclavehash']} {verdict}")
        console.print(blobs)
    if reading.note:
        console.print(f"[dim]{escape(reading.note)}[/]", highlight=False)
