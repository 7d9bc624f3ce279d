"""`sgx-iot enclave`: the enclave image (MRENCLAVE from source), its signing key and its SIGSTRUCT."""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from sgx_iot.cli._common import console, handle_errors, print_json
from sgx_iot.enclave.image import EnclaveBuild, build, find_source_root, installed_source_root
from sgx_iot.enclave.signing import load_signing_key, sign_enclave, write_signing_key, write_sigstruct
from sgx_iot.errors import UsageError
from sgx_iot.sgx.sigstruct import KEY_BYTES

app = typer.Typer(
    no_args_is_help=True,
    help=(
        "sgx-iot's enclave: measure its image (MRENCLAVE) from source, create an enclave signing key, sign the "
        "enclave (SIGSTRUCT). The image definition is docs/enclave-image.md."
    ),
)

_SRC_HELP = "Source tree to measure: a repository, its src/ folder or an installed package (default: this install)."


def _src_option() -> Any:
    return typer.Option(None, "--src", help=_SRC_HELP, show_default=False)


def _json_option() -> Any:
    return typer.Option(False, "--json", help="Print machine-readable JSON.")


def _build(src: Path | None) -> EnclaveBuild:
    return build(find_source_root(src) if src is not None else installed_source_root())


@app.command("measure")
@handle_errors
def measure(src: Path | None = _src_option(), json_: bool = _json_option()) -> None:
    """Print the MRENCLAVE of the enclave built from a source tree (no build step, no SGX needed).

    Examples:

      sgx-iot enclave measure

      sgx-iot enclave measure --src ~/sgx-iot --json | jq -r .mrenclave
    """
    built = _build(src)
    if json_:
        print_json({"source_root": str(built.source_root), **built.describe()})
        return
    config = built.config
    console.print(f"MRENCLAVE {built.mrenclave.hex()}", highlight=False)
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    measured = sum(1 for page in built.image.pages if page.extend)
    for name, value in [
        ("source root", str(built.source_root)),
        ("enclave size", f"{built.image.size:#x}"),
        ("pages", f"{len(built.image.pages)} added, {measured} measured"),
        ("trusted files", f"{len(built.files)} ({sum(f.size for f in built.files)} bytes)"),
        ("ISVPRODID / ISVSVN", f"{config.isv_prod_id} / {config.isv_svn}"),
        ("debug launches", "refused (disable_debug)" if config.disable_debug else "allowed"),
    ]:
        table.add_row(name, value)
    console.print(table, highlight=False)


@app.command("keygen")
@handle_errors
def keygen(
    out: Path = typer.Option(..., "--out", help="Where to write the private key (PKCS#8 PEM, mode 0600)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
    json_: bool = _json_option(),
) -> None:
    """Create an enclave signing key: RSA-3072 with public exponent 3, as SGX requires.

    Its MRSIGNER (SHA-256 of the modulus) identifies every enclave it signs; keys sealed under the MRSIGNER policy
    survive enclave updates only when they are signed by the same key. Keep it secret.

    Examples:

      sgx-iot enclave keygen --out signer.pem
    """
    key = write_signing_key(out, force=force)
    mrsigner = hashlib.sha256(key.public_key().public_numbers().n.to_bytes(KEY_BYTES, "little")).hexdigest()
    if json_:
        print_json({"key": str(out), "mrsigner": mrsigner})
        return
    console.print(f"Wrote an RSA-3072 (e=3) enclave signing key to {out}", highlight=False)
    console.print(f"MRSIGNER {mrsigner}", highlight=False)


@app.command("sign")
@handle_errors
def sign(
    key: Path = typer.Option(..., "--key", help="The enclave signing key (from `sgx-iot enclave keygen`)."),
    out: Path = typer.Option(..., "--out", help="Where to write the SIGSTRUCT (1808 bytes)."),
    src: Path | None = _src_option(),
    date: str | None = typer.Option(None, "--date", help="SIGSTRUCT date YYYY-MM-DD (default: $SOURCE_DATE_EPOCH "
                                    "or today).", show_default=False),
    json_: bool = _json_option(),
) -> None:
    """Sign the enclave: a SIGSTRUCT with its MRENCLAVE and the identity values of enclave.toml.

    Examples:

      sgx-iot enclave sign --key signer.pem --out enclave.sigstruct

      sgx-iot enclave sign --key signer.pem --out enclave.sigstruct --src ~/sgx-iot --date 2026-01-31
    """
    signing_key = load_signing_key(key)
    day = _parse_date(date) if date is not None else None
    built = _build(src)
    sigstruct = sign_enclave(signing_key, built.source_root, date=day, enclave=built)
    write_sigstruct(sigstruct, out)
    values = {
        "sigstruct": str(out),
        "mrenclave": sigstruct.enclave_hash.hex(),
        "mrsigner": sigstruct.mrsigner.hex(),
        "isv_prod_id": sigstruct.isv_prod_id,
        "isv_svn": sigstruct.isv_svn,
        "date": sigstruct.date_string(),
        "debug_allowed": not sigstruct.attribute_mask.debug,
    }
    if json_:
        print_json(values)
        return
    console.print(f"Wrote the SIGSTRUCT to {out}", highlight=False)
    for name in ("mrenclave", "mrsigner", "isv_prod_id", "isv_svn", "date", "debug_allowed"):
        console.print(f"  {name:<13} {values[name]}", highlight=False)


def _parse_date(text: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--date {text!r} is not a date in the form YYYY-MM-DD") from None
