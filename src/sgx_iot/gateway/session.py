"""A running gateway: its state folder plus the enclave process it signs and attests with.

``with GatewaySession(state) as gw: gw.sign([...])`` starts the enclave once (EINIT with the SIGSTRUCT in the state
folder, on the configured platform) and keeps it for every call of the block. Enclave refusals become
:class:`~sgx_iot.enclave.host.EnclaveError` with a sentence that also says what the operator can do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot.enclave.host import Attestation, EnclaveClient, EnclaveError, Signatures
from sgx_iot.enclave.protocol import Tap
from sgx_iot.errors import UsageError
from sgx_iot.gateway.state import GatewayConfig, GatewayState, sha256_hex

_R = TypeVar("_R")

_ADVICE = {
    "UNSEAL_CORRUPT": "restore the state folder from a backup, or run `sgx-iot gateway init --force` to provision "
    "a new key (the cloud must then register it again)",
    "UNSEAL_OTHER_PLATFORM": "use the gateway on the machine (platform) that sealed it, or run `sgx-iot gateway "
    "init --force` to provision a new key here",
    "UNSEAL_OTHER_SIGNER": "run the enclave with a SIGSTRUCT from the original signing key (`sgx-iot gateway init "
    "--sigstruct FILE`), or run `sgx-iot gateway init --force` to provision a new key",
    "UNSEAL_OTHER_ENCLAVE": "run the enclave build (and launch mode) that sealed the key, or run `sgx-iot gateway "
    "init --force` to provision a new key",
    "UNSEAL_REFUSED": "run an enclave at least as new as the one that sealed the key",
    "EINIT_MRENCLAVE_MISMATCH": "the enclave files changed after the SIGSTRUCT was made: restore them, or sign the "
    "enclave again (`sgx-iot enclave sign`) and install the new SIGSTRUCT with `sgx-iot gateway init --sigstruct "
    "FILE`",
    "EINIT_BAD_SIGSTRUCT": "the SIGSTRUCT is damaged: sign the enclave again with `sgx-iot enclave sign`",
}


def with_advice(error: EnclaveError) -> EnclaveError:
    """The same error, its sentence followed by what to do (when there is a standard remedy)."""
    advice = _ADVICE.get(error.code)
    if advice is None:
        return error
    return EnclaveError(error.code, f"{error.message.rstrip('.')}; {advice}")


class GatewaySession:
    """The gateway's enclave, launched from its state folder. ``platform`` overrides the configured platform."""

    def __init__(self, state: GatewayState, *, platform: Path | None = None, tap: Tap | None = None) -> None:
        self.state = state
        self.config: GatewayConfig = state.config()
        self._checked: tuple[bytes, ec.EllipticCurvePublicKey] | None = None
        folder = platform if platform is not None else self.config.platform
        self.platform_folder: Path | None = Path(folder) if folder is not None else None
        """The platform folder the enclave runs on (None: the platform's default)."""
        self._client = EnclaveClient(
            state.sigstruct_path,
            platform=self.platform_folder,
            debug=self.config.debug,
            tap=tap,
            create_platform=False,
        )

    def __enter__(self) -> GatewaySession:
        if not self.state.sigstruct_path.is_file():
            raise UsageError(f"the gateway in {self.state.folder} has no SIGSTRUCT; run `sgx-iot gateway init "
                             "--sigstruct FILE`")
        try:
            self._client.start()
        except EnclaveError as exc:
            raise with_advice(exc) from None
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self._client.close()

    @property
    def client(self) -> EnclaveClient:
        """The enclave client (identity, raw ECALLs)."""
        return self._client

    def sign(self, messages: Sequence[bytes]) -> Signatures:
        """Sign ``messages`` in the enclave with the sealed key (one unseal per ECALL, batches of up to 4096)."""
        return self._with_sealed_key(lambda sealed: self._client.sign(sealed, messages), _public_key_of)

    def sign_stream(self, batches: Iterable[Sequence[bytes]]) -> Iterator[Signatures]:
        """Sign a stream of batches, one :class:`Signatures` per batch in order, two ECALLs in flight
        (:meth:`~sgx_iot.enclave.host.EnclaveClient.sign_stream`: exhaust or close the iterator)."""
        sealed = self.state.sealed_key()
        try:
            with closing(self._client.sign_stream(sealed, batches)) as results:
                for result in results:
                    self._heal(sealed, result.public_key)
                    yield result
        except EnclaveError as exc:
            raise with_advice(exc) from None

    def sign_digests(self, digests: Sequence[bytes]) -> Signatures:
        """Sign data given by its SHA-256 ``digests`` (for files of any size)."""
        return self._with_sealed_key(lambda sealed: self._client.sign_digests(sealed, digests), _public_key_of)

    def attest(self, nonce: bytes) -> Attestation:
        """A REPORT and quote binding the sealed key's public key (derived in the enclave) and ``nonce``."""
        return self._with_sealed_key(lambda sealed: self._client.attest(sealed, nonce), _public_key_of)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The public key as the enclave derives it from the sealed key (the host copy is repaired if it differs)."""
        return self._with_sealed_key(self._client.public_key, lambda key: key)

    def _with_sealed_key(self, ecall: Callable[[bytes], _R], key_of: Callable[[_R], ec.EllipticCurvePublicKey]) -> _R:
        """``ecall(sealed key)``; enclave refusals get their advice, and the host copies are healed after it."""
        sealed = self.state.sealed_key()
        try:
            result = ecall(sealed)
        except EnclaveError as exc:
            raise with_advice(exc) from None
        self._heal(sealed, key_of(result))
        return result

    def _heal(self, sealed: bytes, key: ec.EllipticCurvePublicKey) -> None:
        """Rewrite ``public_key.pem`` when it is missing, stale or corrupted: the enclave's key is authoritative."""
        if self._checked == (sealed, key):
            return
        try:
            current = self.state.public_key()
        except Exception:  # noqa: BLE001 - any unreadable host copy is simply replaced
            current = None
        digest = sha256_hex(sealed)
        if current != key:
            self.state.write_public_key(key)
        if self.config.sealed_key_sha256 != digest:
            self.config = dataclasses.replace(self.config, sealed_key_sha256=digest)
            self.state.write_config(self.config)
        self._checked = (sealed, key)


def _public_key_of(result: Signatures | Attestation) -> ec.EllipticCurvePublicKey:
    return result.public_key
