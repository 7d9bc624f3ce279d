"""`sgx-iot inspect`: a single command (registered by :mod:`sgx_iot.cli.main` from :func:`run`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from sgx_iot.cli._common import handle_errors, print_json, read_input
from sgx_iot.sgx.detect import IAS_REPORT, DetectedFile, describe, detect

_INDENT = "  "


@handle_errors
def run(
    file: Path = typer.Argument(..., help="The file to inspect.", show_default=False),
    json_: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of text."),
) -> None:
    """Recognise an SGX artefact and print every field with its name (bytes in hex).

    Recognised: DCAP quote v3, EPID quote (full or its 432-byte body), IAS report JSON (bare body or the stored {"body", "headers"} form), SIGSTRUCT, Intel SGX SDK enclave (signed or unsigned .so), sealed data (sgx_sealed_data_t), REPORT, TARGETINFO, key request.

    For a DCAP quote it also shows the quote's own signature checks; the certificate chain and TCB status are checked by `sgx-iot verify quote`.

    Exit codes: 0 recognised and printed, 2 unreadable or unrecognised file.

    Examples:

      sgx-iot inspect quote.dat

      sgx-iot inspect enclave.signed.so --json \\
          | jq .fields.metadata[0].sigstruct.enclave_hash

      sgx-iot inspect ias_report.json
    """
    data = read_input(file, "file")
    found = _upgrade(detect(data, file.name), data)
    fields = describe(found.obj)
    if json_:
        print_json({"file": str(file), "kind": found.kind, "title": found.title, "fields": fields})
        return
    typer.echo(f"{file}: {found.title}")
    for line in render_text(fields, 1):
        typer.echo(line)


def _upgrade(found: DetectedFile, data: bytes) -> DetectedFile:
    """Use the verifier's full IAS report parser when it is available (the sgx layer only recognises the JSON)."""
    if found.kind != IAS_REPORT:
        return found
    try:
        from sgx_iot.verify.ias import IasReport
    except ImportError:  # pragma: no cover - the verifier module is part of the package
        return found
    return DetectedFile(found.kind, IasReport.parse(data), found.name)


def render_text(value: Any, depth: int = 0) -> list[str]:
    """Indented ``name: value`` lines for the nested data that :func:`describe` returns."""
    pad = _INDENT * depth
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, list) and item and all(isinstance(i, str) and "\n" not in i for i in item):
                lines.append(f"{pad}{key}: {', '.join(item)}")
            elif isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{key}:")
                lines.extend(render_text(item, depth + 1))
            else:
                lines.extend(_scalar(f"{pad}{key}: ", item, pad))
    elif isinstance(value, list) and all(isinstance(item, str) for item in value) and not any(
        "\n" in item for item in value
    ):
        lines.append(pad + ", ".join(value))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}[{index}]")
                lines.extend(render_text(item, depth + 1))
            else:
                lines.extend(_scalar(f"{pad}[{index}] ", item, pad))
    else:
        lines.extend(_scalar(pad, value, pad))
    return lines


def _scalar(prefix: str, value: Any, pad: str) -> list[str]:
    if value is None:
        return [prefix + "-"]
    if isinstance(value, bool):
        return [prefix + ("yes" if value else "no")]
    if value == [] or value == {}:
        return [prefix + "(none)"]
    text = str(value)
    if "\n" in text:
        return [prefix.rstrip()] + [pad + _INDENT + line for line in text.rstrip("\n").split("\n")]
    return [prefix + text]
