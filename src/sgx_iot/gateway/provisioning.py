"""``gateway init``: provision a key in the enclave and store it sealed, or move an existing key to a new SIGSTRUCT.

Writes, each atomically and in this order: the SIGSTRUCT, the sealed key, the public key, then the configuration
(whose ``sealed_key_sha256`` says which sealed key the public key file belongs to).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot.enclave.host import EnclaveClient, EnclaveError, SealPolicy
from sgx_iot.errors import UsageError
from sgx_iot.gateway.session import with_advice
from sgx_iot.gateway.state import GatewayConfig, GatewayState, sha256_hex
from sgx_iot.platform.base import EnclaveIdentity
from sgx_iot.sgx.sigstruct import Sigstruct

_R = TypeVar("_R")


@dataclass(frozen=True)
class InitResult:
    """What ``init`` did: ``action`` is ``"provisioned"`` (a new key) or ``"sigstruct-updated"`` (same key)."""

    action: str
    state: GatewayState
    public_key: ec.EllipticCurvePublicKey
    identity: EnclaveIdentity
    platform_kind: str
    policy: str


def identity_summary(identity: EnclaveIdentity) -> dict[str, Any]:
    """The enclave identity as recorded in the state and in evidence (hex strings, ints, debug flag)."""
    return {
        "mrenclave": identity.mrenclave.hex(),
        "mrsigner": identity.mrsigner.hex(),
        "isv_prod_id": identity.isv_prod_id,
        "isv_svn": identity.isv_svn,
        "debug": identity.debug,
    }


def init_gateway(
    state: GatewayState,
    *,
    sigstruct: Path | None = None,
    platform: Path | None = None,
    policy: SealPolicy | None = None,
    debug: bool = False,
    force: bool = False,
) -> InitResult:
    """Provision the gateway in ``state``.

    * Not provisioned yet, or ``force``: launch the enclave with ``sigstruct`` (or the one already in the state) on
      ``platform`` (default: the simulated platform's default folder), generate and seal a new key under
      ``policy`` (MRSIGNER unless told otherwise) and store everything.
    * Already provisioned, with a new ``sigstruct``: check that the enclave it signs can unseal the existing key
      (same signer under MRSIGNER), then switch to it; the key does not change.
    * Already provisioned otherwise: ``UsageError`` (``force`` replaces the key; the cloud must register it again).
    """
    if state.is_provisioned() and not force:
        if sigstruct is None:
            raise UsageError(f"the gateway in {state.folder} is already provisioned (public key "
                             f"{state.public_key_path}); pass --force to replace its key (the cloud must then register "
                             "it again) or --sigstruct FILE to run a newly signed enclave with the same key")
        return _switch_sigstruct(state, sigstruct, platform, debug)
    source = sigstruct if sigstruct is not None else (state.sigstruct_path if state.sigstruct_path.is_file() else None)
    if source is None:
        raise UsageError("give the enclave's SIGSTRUCT with --sigstruct FILE (create one with `sgx-iot enclave keygen "
                         "--out KEY` and `sgx-iot enclave sign --key KEY --out FILE`)")
    sigstruct_bytes = _read_sigstruct(source)
    folder = _platform_folder(platform)
    chosen = policy or SealPolicy.MRSIGNER
    provisioned, identity, kind = _in_enclave(source, folder, debug, lambda client: client.provision(chosen))
    state.write_sigstruct(sigstruct_bytes)
    state.write_sealed_key(provisioned.sealed)
    state.write_public_key(provisioned.public_key)
    state.write_config(GatewayConfig(
        platform=str(folder), policy=chosen.value, debug=debug, platform_kind=kind,
        enclave=identity_summary(identity), sealed_key_sha256=sha256_hex(provisioned.sealed),
    ))  # fmt: skip
    return InitResult("provisioned", state, provisioned.public_key, identity, kind, chosen.value)


def _switch_sigstruct(state: GatewayState, sigstruct: Path, platform: Path | None, debug: bool) -> InitResult:
    config = state.config()
    sealed = state.sealed_key()
    sigstruct_bytes = _read_sigstruct(sigstruct)
    folder = platform if platform is not None else (Path(config.platform) if config.platform else None)
    launch_debug = debug or config.debug
    public_key, identity, kind = _in_enclave(sigstruct, folder, launch_debug,
                                             lambda client: client.public_key(sealed))  # fmt: skip
    state.write_sigstruct(sigstruct_bytes)
    state.write_public_key(public_key)
    state.write_config(dataclasses.replace(
        config, platform=str(folder) if folder is not None else config.platform, debug=launch_debug,
        platform_kind=kind, enclave=identity_summary(identity), sealed_key_sha256=sha256_hex(sealed),
    ))  # fmt: skip
    return InitResult("sigstruct-updated", state, public_key, identity, kind, config.policy)


def _in_enclave(sigstruct: Path, folder: Path | None, debug: bool,
                call: Callable[[EnclaveClient], _R]) -> tuple[_R, EnclaveIdentity, str]:  # fmt: skip
    """Launch the enclave, make one ECALL (refusals get their advice); the result, the identity and platform kind."""
    with EnclaveClient(sigstruct, platform=folder, debug=debug) as client:
        try:
            result = call(client)
        except EnclaveError as exc:
            raise with_advice(exc) from None
        assert client.identity is not None
        return result, client.identity, client.platform_kind


def _read_sigstruct(path: Path) -> bytes:
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(Sigstruct.SIZE + 1)  # bounded: a huge file or a device is refused, not slurped
    except FileNotFoundError:
        raise UsageError(f"the SIGSTRUCT {path} does not exist; create it with `sgx-iot enclave sign`") from None
    except OSError as exc:
        raise UsageError(f"cannot read the SIGSTRUCT {path}: {exc.strerror or exc}") from None
    Sigstruct.parse(data)  # FormatError when it is not 1808 bytes
    return data


def _platform_folder(platform: Path | None) -> Path:
    from sgx_iot.platform.sim.store import default_folder

    return (Path(platform) if platform is not None else default_folder()).expanduser().resolve()
