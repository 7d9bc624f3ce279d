"""An enclave rebuilt from modified source: a copy of the ``sgx_iot`` package with one line added to the enclave
program — the smallest change an attacker (or a careless build) could make after the audit — and what the
platform and the cloud make of it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from sgx_iot.enclave.host import EnclaveClient, EnclaveError
from sgx_iot.enclave.image import ENTRY
from sgx_iot.gateway.provisioning import identity_summary
from sgx_iot.gateway.state import public_key_pem
from sgx_iot.verify.evidence import Evidence

MODIFICATION = (
    b"\n# Added after the audit: any change to a trusted file, even this one line, changes MRENCLAVE.\n"
    b"UNAUDITED_CHANGE = True\n"
)
"""The line appended to the enclave program (:data:`sgx_iot.enclave.image.ENTRY`)."""


def modified_copy(source_root: Path, target: Path) -> Path:
    """Copy the ``sgx_iot`` package of ``source_root`` to ``target/sgx_iot``, append :data:`MODIFICATION` to the
    enclave program, and return ``target`` (the modified tree's source root)."""
    target = Path(target)
    shutil.copytree(Path(source_root) / "sgx_iot", target / "sgx_iot",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
    program = target / ENTRY
    program.write_bytes(program.read_bytes() + MODIFICATION)
    return target


def launch_refusal(sigstruct: Path, platform: Path, tree: Path) -> tuple[str | None, str]:
    """Launch the enclave of ``tree`` with ``sigstruct``: ``(code, sentence)`` of the refusal, or
    ``(None, "the enclave launched")``."""
    try:
        with EnclaveClient(sigstruct, platform=platform, source_root=tree):
            return None, "the enclave launched"
    except EnclaveError as exc:
        return exc.code, exc.message


def enclave_evidence(sigstruct: Path, platform: Path, tree: Path, nonce: Callable[[], bytes]) -> Evidence:
    """Launch the enclave of ``tree``, provision a key in it, and attest that key for the nonce ``nonce()``
    returns (asked for once the enclave runs, as a gateway would)."""
    with EnclaveClient(sigstruct, platform=platform, source_root=tree) as enclave:
        provisioned = enclave.provision()
        fresh = nonce()
        attestation = enclave.attest(provisioned.sealed, fresh)
        assert enclave.identity is not None
        return Evidence(enclave.platform_kind, attestation.quote, public_key_pem(attestation.public_key), fresh,
                        identity_summary(enclave.identity))  # fmt: skip
