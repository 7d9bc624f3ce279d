"""What ``sgx-iot sim info`` shows about a simulated platform, and the root-certificate export."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization

from sgx_iot.errors import UsageError
from sgx_iot.platform.sim.pki import fingerprint
from sgx_iot.platform.sim.qe import QE_ISV_PROD_ID, QE_MRSIGNER
from sgx_iot.platform.sim.store import PlatformStore

SIMULATED_NOTICE = (
    "SIMULATED SGX platform (sgx-iot): not real hardware; its quotes chain to a simulation root that verifiers "
    "trust only when configured to"
)


def platform_info(store: PlatformStore) -> dict[str, Any]:
    """The platform's public identity and TCB state (no secrets), JSON-ready."""
    config = store.config
    root = store.pki.root_cert
    return {
        "kind": "simulated",
        "notice": SIMULATED_NOTICE,
        "folder": str(store.folder),
        "created": config.created,
        "cpu_svn": config.pck.cpu_svn.hex(),
        "pce_svn": config.pck.pce_svn,
        "pce_id": config.pck.pce_id.hex(),
        "fmspc": config.pck.fmspc.hex(),
        "ppid": config.pck.ppid.hex(),
        "qe": {"mrsigner": QE_MRSIGNER.hex(), "isv_prod_id": QE_ISV_PROD_ID, "isv_svn": config.qe_svn},
        "tcb_status": config.tcb.status,
        "advisories": list(config.tcb.advisories),
        "pck_revoked": config.tcb.pck_revoked,
        "collateral_validity_days": config.tcb.validity_days,
        "root_ca": {
            "subject": root.subject.rfc4514_string(),
            "sha256": fingerprint(root),
            "not_after": root.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "pck_certificate_serial": f"{store.pki.pck_cert.serial_number:x}",
    }


def root_certificate(store: PlatformStore, fmt: str) -> bytes:
    """The root CA certificate as ``"pem"`` or ``"der"`` bytes (``UsageError`` for another format)."""
    if fmt == "pem":
        return store.pki.root_cert.public_bytes(serialization.Encoding.PEM)
    if fmt == "der":
        return store.pki.root_der()
    raise UsageError(f"unknown certificate format {fmt!r}; use pem or der")
