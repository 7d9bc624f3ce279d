"""`sgx-iot cloud` sub-commands: run the relying-party service."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from sgx_iot.cli._common import console, handle_errors, print_json, read_input
from sgx_iot.errors import UsageError

app = typer.Typer(no_args_is_help=True, help="The cloud service: registry of attested gateways, signed readings.")

class LogLevel(str, Enum):
    """Levels of ``cloud serve --log-level`` (uvicorn's ``trace`` is left out: it logs request bodies)."""

    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"


_HOME = Annotated[
    Path | None,
    typer.Option("--home", help="Data folder (default $SGX_IOT_CLOUD_HOME or ~/.local/share/sgx-iot/cloud)."),
]


@app.command("serve")
@handle_errors
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.", min=0, max=65535)] = 8000,
    db: Annotated[
        str | None, typer.Option("--db", help="Database URL (default: sqlite file in the data folder).")
    ] = None,
    policy: Annotated[Path | None, typer.Option("--policy", help="Appraisal policy (default HOME/policy.toml).")] = None,
    admin_token_file: Annotated[
        Path | None, typer.Option("--admin-token-file", help="File holding the admin token (revocation).")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes.", min=1, max=64)] = 1,
    collateral: Annotated[
        Path | None, typer.Option("--collateral", help="Collateral file for every quote (QuoteCollateralV3 JSON).")
    ] = None,
    pccs: Annotated[str | None, typer.Option("--pccs", help="Fetch collateral from this PCCS (cached).")] = None,
    log_level: Annotated[
        LogLevel, typer.Option("--log-level", help="Log from this level up (nothing secret at any level).")
    ] = LogLevel.info,
    home: _HOME = None,
) -> None:
    """Serve the HTTP API (OpenAPI at /docs) until interrupted.

    Collateral comes from --collateral, --pccs, or else from each evidence. The admin token may also be given in
    $SGX_IOT_CLOUD_ADMIN_TOKEN. Migrations run at start.

    Examples:

        sgx-iot cloud serve --policy policy.toml

        sgx-iot cloud serve --port 8443 --db postgresql+psycopg://sgx@db/sgx --workers 2 --pccs http://127.0.0.1:8081

        sgx-iot cloud serve --log-level debug
    """
    from sgx_iot.cloud.server import serve as run
    from sgx_iot.cloud.settings import load_settings

    settings = load_settings(home=home, db_url=db, policy_path=policy, admin_token_file=admin_token_file,
                             collateral_file=collateral, pccs_url=pccs)
    console.print(f"sgx-iot cloud: policy {settings.policy.id}, data in {settings.home}", highlight=False)
    run(settings, host=host, port=port, workers=workers, log_level=log_level.value)


@app.command("init")
@handle_errors
def init(
    mrenclave: Annotated[
        list[str] | None, typer.Option("--mrenclave", help="Allowed MRENCLAVE (hex); repeat for several.")
    ] = None,
    mrsigner: Annotated[list[str] | None, typer.Option("--mrsigner", help="Allowed MRSIGNER (hex).")] = None,
    isv_prod_id: Annotated[int | None, typer.Option("--isv-prod-id", help="Required ISVPRODID.", min=0)] = None,
    min_isv_svn: Annotated[int, typer.Option("--min-isv-svn", help="Minimum ISVSVN.", min=0)] = 0,
    trust_root: Annotated[
        list[Path] | None, typer.Option("--trust-root", help="Also trust this root CA (PEM/DER), e.g. the sim's.")
    ] = None,
    no_intel: Annotated[bool, typer.Option("--no-intel", help="Do not trust Intel's SGX Root CA.")] = False,
    db: Annotated[str | None, typer.Option("--db", help="Database URL to create the schema in.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing policy.toml.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print what was created as JSON.")] = False,
    home: _HOME = None,
) -> None:
    """Create the data folder: policy.toml from the given reference values, the EAR signing key, the database.

    Examples:

        sgx-iot cloud init --mrenclave 27d7cd0e… --trust-root sim-root.pem

        sgx-iot cloud init --mrsigner 3db0e074… --isv-prod-id 0 --min-isv-svn 1
    """
    from sgx_iot.cloud.server import prepare
    from sgx_iot.cloud.settings import Settings, default_home
    from sgx_iot.verify.policy import Policy, TrustRoot

    folder = home or default_home()
    path = folder / "policy.toml"
    if path.exists() and not force:
        raise UsageError(f"{path} exists; pass --force to overwrite it")
    roots = []
    for root in trust_root or []:
        from sgx_iot.verify.dcap import load_root_ca

        roots.append(TrustRoot.from_der(load_root_ca(read_input(root, "root certificate")), str(root)))
    doc = {"trust": {"intel": not no_intel, "root_sha256": [r.sha256 for r in roots]},
           "enclave": {"mrenclave": mrenclave or [], "mrsigner": mrsigner or [], "min_isv_svn": min_isv_svn}}
    if isv_prod_id is not None:
        doc["enclave"]["isv_prod_id"] = isv_prod_id
    policy = Policy.from_dict(doc)
    settings = Settings(home=folder, policy=policy, db_url=db or "")
    from sgx_iot._fs import atomic_write_text

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, policy.to_toml(), mode=0o644)
    prepare(settings)
    created = {"home": str(folder), "policy": str(path), "policy_id": policy.id,
               "verifier_key": str(settings.verifier_key_path), "database": settings.db_url}
    if json_output:
        print_json(created)
    else:
        for key, value in created.items():
            console.print(f"{key:13} {value}", highlight=False)
