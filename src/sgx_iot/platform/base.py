"""What an enclave may ask of its TEE, independent of how the TEE is implemented.

Two roles:

* :class:`Platform` is the machine: it launches (EINITs) an enclave image with its SIGSTRUCT and tells what it
  is (``kind`` is ``"simulated"`` or ``"gramine"``).
* :class:`EnclaveRuntime` is what the *running* enclave sees: its identity (established by EINIT, never by the
  enclave's own claims), EGETKEY, EREPORT, report verification, and the quoting enclave.

Implementations: :mod:`sgx_iot.platform.sim` (software model, byte-compatible with hardware outputs) and
:mod:`sgx_iot.platform.gramine` (``/dev/attestation`` on real SGX). Both raise
:class:`sgx_iot.errors.PlatformError` with a stable code when they refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from sgx_iot.sgx.attributes import Attributes
    from sgx_iot.sgx.keyrequest import KeyRequest
    from sgx_iot.sgx.measure import EnclaveImage
    from sgx_iot.sgx.report import Report, TargetInfo
    from sgx_iot.sgx.sigstruct import Sigstruct


@dataclass(frozen=True)
class EnclaveIdentity:
    """The identity of a running enclave, as the SECS holds it after EINIT."""

    mrenclave: bytes
    mrsigner: bytes
    isv_prod_id: int
    isv_svn: int
    attributes: Attributes
    misc_select: int
    cpu_svn: bytes
    config_svn: int = 0
    config_id: bytes = bytes(64)
    isv_family_id: bytes = bytes(16)
    isv_ext_prod_id: bytes = bytes(16)

    @property
    def debug(self) -> bool:
        """True when the enclave was launched in debug mode (its memory is readable by the host)."""
        return self.attributes.debug


@runtime_checkable
class EnclaveRuntime(Protocol):
    """The TEE services available to one running enclave."""

    @property
    def identity(self) -> EnclaveIdentity:
        """This enclave's identity, as established by EINIT."""
        ...

    @property
    def platform_kind(self) -> str:
        """``"simulated"`` or ``"gramine"`` (real SGX)."""
        ...

    def get_key(self, request: KeyRequest) -> bytes:
        """EGETKEY: the 16-byte key for ``request`` (SEAL or REPORT). Refuses a newer ISVSVN/CPUSVN."""
        ...

    def target_info(self) -> TargetInfo:
        """This enclave's own TARGETINFO (so another enclave can create a REPORT for it)."""
        ...

    def create_report(self, target: TargetInfo, report_data: bytes) -> Report:
        """EREPORT: a REPORT of this enclave with 64 bytes of ``report_data``, MACed for ``target``."""
        ...

    def verify_report(self, report: Report) -> None:
        """Check a REPORT targeted at this enclave (EGETKEY REPORT + CMAC); raise ``PlatformError`` if bad."""
        ...

    def qe_target_info(self) -> TargetInfo:
        """The quoting enclave's TARGETINFO."""
        ...

    def get_quote(self, report: Report) -> bytes:
        """Have the quoting enclave turn ``report`` (targeted at it) into a DCAP quote v3 (raw bytes)."""
        ...


@runtime_checkable
class Platform(Protocol):
    """A machine that can launch enclaves."""

    @property
    def kind(self) -> str:
        """``"simulated"`` or ``"gramine"``."""
        ...

    def launch(self, image: EnclaveImage, sigstruct: Sigstruct, *, debug: bool = False) -> EnclaveRuntime:
        """EINIT: measure ``image``, check ``sigstruct`` (signature, ENCLAVEHASH, attribute mask).

        Returns the runtime of the launched enclave. Raises ``PlatformError`` (code ``EINIT_MRENCLAVE_MISMATCH``
        naming both MRENCLAVEs, ``EINIT_BAD_SIGSTRUCT``, ``EINIT_ATTRIBUTES``) when it refuses.
        """
        ...
