"""`sgx-iot gateway`: the untrusted host of the gateway enclave (provision, attest, sign, public key)."""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

import typer

from sgx_iot.cli._common import console, err_console, handle_errors, print_json
from sgx_iot.enclave.host import MAX_BATCH, SealPolicy
from sgx_iot.gateway.attestation import attest as attest_gateway
from sgx_iot.gateway.attestation import parse_nonce
from sgx_iot.gateway.provisioning import identity_summary, init_gateway
from sgx_iot.gateway.session import GatewaySession
from sgx_iot.gateway.signing import LINES_PER_ECALL, sign_files, sign_lines
from sgx_iot.gateway.state import GatewayState, public_key_pem
from sgx_iot._fs import atomic_write_text
from sgx_iot.errors import UsageError

app = typer.Typer(
    no_args_is_help=True,
    help=(
        "The gateway: a P-256 key generated and sealed inside the enclave, attested with a verifier's nonce, used "
        "to sign sensor data. State folder: --state, else $SGX_IOT_GATEWAY_HOME, else "
        "~/.local/share/sgx-iot/gateway."
    ),
)

_STATE_HELP = "Gateway state folder (default: $SGX_IOT_GATEWAY_HOME or ~/.local/share/sgx-iot/gateway)."
_PLATFORM_HELP = "Simulated platform folder (default: the one recorded at `gateway init`)."


def state_option() -> Any:
    """The shared ``--state`` option (other gateway commands reuse it)."""
    return typer.Option(None, "--state", help=_STATE_HELP, show_default=False)


def platform_option(help_text: str = _PLATFORM_HELP) -> Any:
    """The shared ``--platform`` option."""
    return typer.Option(None, "--platform", help=help_text, show_default=False)


def _json_option() -> Any:
    return typer.Option(False, "--json", help="Print machine-readable JSON.")


@app.command("init")
@handle_errors
def init(
    state: Path | None = state_option(),
    platform: Path | None = platform_option("Simulated platform folder (default: $SGX_IOT_PLATFORM or "
                                            "~/.local/share/sgx-iot/platform; created on first use)."),
    sigstruct: Path | None = typer.Option(None, "--sigstruct", help="The enclave's SIGSTRUCT (from `sgx-iot "
                                          "enclave sign`); required the first time.", show_default=False),
    policy: SealPolicy | None = typer.Option(None, "--policy", help="Seal the key to the enclave's signer "
                                             "(mrsigner, the default) or to this exact build (mrenclave).",
                                             show_default=False, case_sensitive=False),
    debug: bool = typer.Option(False, "--debug", help="Launch the enclave in debug mode (verifiers refuse it)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing key (the cloud must register the new one)."),
    json_: bool = _json_option(),
) -> None:
    """Provision the gateway: generate a P-256 key in the enclave and store it sealed.

    On a provisioned gateway, --sigstruct FILE switches to a newly signed enclave after checking that it can
    unseal the existing key; --force provisions a new key instead.

    Examples:

      sgx-iot gateway init --sigstruct enclave.sigstruct

      sgx-iot gateway init --state /tmp/gw --platform /tmp/plat --sigstruct enclave.sigstruct --policy mrenclave
    """
    result = init_gateway(GatewayState(state), sigstruct=sigstruct, platform=platform, policy=policy, debug=debug,
                          force=force)  # fmt: skip
    values = {
        "action": result.action,
        "state": str(result.state.folder),
        "public_key": str(result.state.public_key_path),
        "sealed_key": str(result.state.sealed_key_path),
        "policy": result.policy,
        "platform": result.platform_kind,
        "enclave": identity_summary(result.identity),
    }
    if json_:
        print_json(values)
        return
    verb = "Provisioned a new key" if result.action == "provisioned" else "Switched to the new SIGSTRUCT (same key)"
    console.print(f"{verb} in {result.state.folder} ({result.platform_kind} platform)", highlight=False)
    console.print(f"  sealed key  {result.state.sealed_key_path} (policy {result.policy})", highlight=False)
    console.print(f"  public key  {result.state.public_key_path}", highlight=False)
    console.print(f"  MRENCLAVE   {values['enclave']['mrenclave']}", highlight=False)
    console.print(f"  MRSIGNER    {values['enclave']['mrsigner']}", highlight=False)
    if result.identity.debug:
        console.print("[bold yellow]  the enclave runs in DEBUG mode: verifiers will refuse its evidence[/]")


@app.command("attest")
@handle_errors
def attest(
    nonce: str = typer.Option(..., "--nonce", help="The verifier's challenge, hex (16 to 64 bytes)."),
    out: Path = typer.Option(..., "--out", help="Where to write the evidence JSON."),
    collateral: bool = typer.Option(False, "--collateral", help="Attach the simulated platform's collateral."),
    state: Path | None = state_option(),
    platform: Path | None = platform_option(),
    json_: bool = _json_option(),
) -> None:
    """Attest the gateway's key: evidence (quote, public key, nonce, enclave identity) for a verifier.

    The enclave derives the public key from the sealed private key and binds it with the nonce into the quote's
    REPORTDATA: SHA-256(SubjectPublicKeyInfo DER ‖ nonce) ‖ 32 zero bytes.

    Examples:

      sgx-iot gateway attest --nonce $(openssl rand -hex 32) --out evidence.json --collateral
    """
    evidence = attest_gateway(GatewayState(state), parse_nonce(nonce), collateral=collateral, platform=platform)
    atomic_write_text(out, evidence.to_json(), mode=0o644)
    if json_:
        print_json({"evidence": str(out), "platform": evidence.platform, "enclave": evidence.enclave,
                    "quote_bytes": len(evidence.quote), "collateral": evidence.collateral is not None})
        return
    console.print(f"Wrote evidence to {out} ({evidence.platform} platform, {len(evidence.quote)}-byte quote"
                  f"{', with collateral' if evidence.collateral else ''})", highlight=False)


@app.command("sign")
@handle_errors
def sign(
    files: list[Path] = typer.Argument(None, help="Files to sign; each gets FILE.sig (DER).", show_default=False),
    stdin: bool = typer.Option(False, "--stdin", help="Sign each line of standard input (without its newline); "
                               "print one signature per line."),
    base64_: bool = typer.Option(False, "--base64", help="With --stdin: base64 signatures instead of hex."),
    batch: int = typer.Option(LINES_PER_ECALL, "--batch", min=1, max=MAX_BATCH, help="With --stdin: lines per "
                              "ECALL. Signatures of a batch are printed once the next batch was read or the input "
                              "ended: use small batches for a slow, live input."),
    state: Path | None = state_option(),
    platform: Path | None = platform_option(),
) -> None:
    """Sign data in the enclave: ECDSA P-256 / SHA-256, DER (what `openssl dgst -sha256 -sign` makes).

    Files are signed in one batch and each signature is written beside its file as FILE.sig; the command prints
    the public key's path. With --stdin, lines are signed in batches of --batch lines (one ECALL each, two in
    flight) and the signatures printed in input order, one per line.

    Examples:

      sgx-iot gateway sign Sensor_Data

      openssl dgst -sha256 -verify ~/.local/share/sgx-iot/gateway/public_key.pem -signature Sensor_Data.sig Sensor_Data

      printf 'reading 1\\nreading 2\\n' | sgx-iot gateway sign --stdin --base64

      tail -f sensor.log | sgx-iot gateway sign --stdin --batch 1
    """
    if stdin == bool(files):
        raise UsageError("give files to sign, or --stdin (not both)")
    if base64_ and not stdin:
        raise UsageError("--base64 applies to --stdin only (file signatures are written as DER)")
    if batch != LINES_PER_ECALL and not stdin:
        raise UsageError("--batch applies to --stdin only (files are signed in one batch)")
    with GatewaySession(GatewayState(state), platform=platform) as session:
        if stdin:
            encode = (lambda s: base64.b64encode(s).decode("ascii")) if base64_ else bytes.hex
            for signatures in sign_lines(session, sys.stdin.buffer, batch=batch):
                sys.stdout.write("".join(encode(signature) + "\n" for signature in signatures))
                sys.stdout.flush()
            return
        result = sign_files(session, files)
    for path in result.signatures:
        err_console.print(f"wrote {path}", highlight=False)
    console.print(str(result.public_key_path), highlight=False, soft_wrap=True)


@app.command("pubkey")
@handle_errors
def pubkey(
    state: Path | None = state_option(),
    platform: Path | None = platform_option(),
    from_enclave: bool = typer.Option(False, "--from-enclave", help="Derive it in the enclave from the sealed key "
                                      "(and repair the stored copy) instead of reading the stored copy."),
    json_: bool = _json_option(),
) -> None:
    """Print the gateway's public key (PEM).

    Examples:

      sgx-iot gateway pubkey > gateway.pem

      sgx-iot gateway pubkey --from-enclave --json
    """
    gateway_state = GatewayState(state)
    if from_enclave:
        with GatewaySession(gateway_state, platform=platform) as session:
            key = session.public_key()
    else:
        key = gateway_state.public_key()
    pem = public_key_pem(key)
    if json_:
        print_json({"path": str(gateway_state.public_key_path), "pem": pem})
        return
    sys.stdout.write(pem)
