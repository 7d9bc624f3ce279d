"""The simulated SGX machine: EINIT, and the runtime a launched enclave sees (EGETKEY, EREPORT, the QE).

The enclave's identity is established here, by EINIT, from the measured image and the verified SIGSTRUCT; the
enclave program never states it. See :mod:`sgx_iot.platform.base` for the contracts.
"""

from __future__ import annotations

import hmac
import os
import secrets

from sgx_iot.errors import FormatError, PlatformError, VerificationError
from sgx_iot.platform.base import EnclaveIdentity
from sgx_iot.platform.sim.keys import egetkey, report_key, report_mac, target_of
from sgx_iot.platform.sim.qe import QuotingEnclave
from sgx_iot.platform.sim.store import PlatformStore
from sgx_iot.sgx.attributes import AttributeFlags, Attributes
from sgx_iot.sgx.keyrequest import KeyName, KeyRequest
from sgx_iot.sgx.measure import EnclaveImage
from sgx_iot.sgx.report import Report, ReportBody, TargetInfo
from sgx_iot.sgx.sigstruct import Sigstruct

KIND = "simulated"
_MISC_MASK = 0xFFFFFFFF
_DEBUG = int(AttributeFlags.DEBUG)


class SimPlatform:
    """A simulated SGX platform backed by a persistent folder (created on first use).

    ``SimPlatform()`` uses :func:`sgx_iot.platform.sim.store.default_folder`; ``SimPlatform(path)`` another one.
    """

    def __init__(self, folder: str | os.PathLike[str] | None = None, *, store: PlatformStore | None = None) -> None:
        self._store = store if store is not None else PlatformStore.open(folder)
        self._cpu_svn = self._store.config.pck.cpu_svn
        # Hardware picks a fresh report KEYID at every power cycle; so does each SimPlatform instance.
        self._report_key_id = secrets.token_bytes(32)
        self._qe = QuotingEnclave(self._store)

    def __repr__(self) -> str:
        return f"SimPlatform(folder={str(self._store.folder)!r})"

    @property
    def kind(self) -> str:
        """Always ``"simulated"``."""
        return KIND

    @property
    def store(self) -> PlatformStore:
        """The platform's folder (configuration, PKI)."""
        return self._store

    @property
    def quoting_enclave(self) -> QuotingEnclave:
        """The platform's quoting enclave."""
        return self._qe

    def launch(self, image: EnclaveImage, sigstruct: Sigstruct, *, debug: bool = False) -> SimEnclaveRuntime:
        """EINIT ``image`` with ``sigstruct``; see :meth:`sgx_iot.platform.base.Platform.launch`.

        Checks, in the order of the EINIT instruction: the SIGSTRUCT signature (EINIT_BAD_SIGSTRUCT), the
        attributes under the SIGSTRUCT's attribute mask (EINIT_ATTRIBUTES; a debug launch needs a mask that leaves
        DEBUG free), then MRENCLAVE = ENCLAVEHASH (EINIT_MRENCLAVE_MISMATCH, naming both; an image that cannot be
        measured is EINIT_BAD_IMAGE). The SECS takes MISCSELECT from the SIGSTRUCT, so it always passes its mask.
        """
        try:
            sigstruct.verify()
        except VerificationError as exc:
            message = f"EINIT refused the enclave: {exc.message} ({exc.code})"
            raise PlatformError("EINIT_BAD_SIGSTRUCT", message) from None

        # SECS attributes as the loader sets them before EINIT: the SIGSTRUCT's, INIT clear, DEBUG as requested.
        base_flags = sigstruct.attributes.flags & ~int(AttributeFlags.INIT | AttributeFlags.DEBUG)
        requested = Attributes(base_flags | (_DEBUG if debug else 0), sigstruct.attributes.xfrm)
        mask = sigstruct.attribute_mask
        if (requested & mask) != (sigstruct.attributes & mask):
            if (requested.flags ^ sigstruct.attributes.flags) & mask.flags & _DEBUG:
                mode = "debug" if debug else "non-debug"
                raise PlatformError(
                    "EINIT_ATTRIBUTES",
                    f"EINIT refused a {mode} launch: the SIGSTRUCT's attribute mask fixes DEBUG to "
                    f"{int(sigstruct.attributes.debug)} (its signer decided whether it may be debugged)",
                )
            raise PlatformError(
                "EINIT_ATTRIBUTES",
                f"EINIT refused the enclave: attributes flags {requested.flags:#x} xfrm {requested.xfrm:#x} differ "
                f"from the SIGSTRUCT's {sigstruct.attributes.flags:#x}/{sigstruct.attributes.xfrm:#x} under its "
                f"mask {mask.flags:#x}/{mask.xfrm:#x}",
            )
        try:
            measured = image.mrenclave()
        except FormatError as exc:
            raise PlatformError("EINIT_BAD_IMAGE", f"EINIT refused the enclave image: {exc}") from None
        if not hmac.compare_digest(measured, sigstruct.enclave_hash):
            raise PlatformError(
                "EINIT_MRENCLAVE_MISMATCH",
                f"EINIT refused the enclave: the image measures to MRENCLAVE {measured.hex()} but its SIGSTRUCT "
                f"states {sigstruct.enclave_hash.hex()} (the image or the SIGSTRUCT was modified, or they do not "
                "belong together)",
            )

        kss = bool(requested.flags & int(AttributeFlags.KSS))
        identity = EnclaveIdentity(
            mrenclave=measured,
            mrsigner=sigstruct.mrsigner,
            isv_prod_id=sigstruct.isv_prod_id,
            isv_svn=sigstruct.isv_svn,
            attributes=Attributes(requested.flags | int(AttributeFlags.INIT), requested.xfrm),
            misc_select=sigstruct.misc_select & _MISC_MASK,
            cpu_svn=self._cpu_svn,
            isv_family_id=sigstruct.isv_family_id if kss else bytes(16),
            isv_ext_prod_id=sigstruct.isv_ext_prod_id if kss else bytes(16),
        )
        return SimEnclaveRuntime(self, identity)

    # --- services the runtimes share (platform-internal) -----------------------------------------------

    def _egetkey(self, identity: EnclaveIdentity, request: KeyRequest) -> bytes:
        return egetkey(self._store.secret, self._cpu_svn, identity, request)

    def _ereport(self, identity: EnclaveIdentity, target: TargetInfo, report_data: bytes) -> Report:
        if len(report_data) != 64:
            raise PlatformError("EREPORT_BAD_REPORT_DATA", f"REPORTDATA must be 64 bytes, not {len(report_data)}")
        body = ReportBody(
            cpu_svn=self._cpu_svn,
            misc_select=identity.misc_select,
            isv_ext_prod_id=identity.isv_ext_prod_id,
            attributes=identity.attributes,
            mr_enclave=identity.mrenclave,
            mr_signer=identity.mrsigner,
            config_id=identity.config_id,
            isv_prod_id=identity.isv_prod_id,
            isv_svn=identity.isv_svn,
            config_svn=identity.config_svn,
            isv_family_id=identity.isv_family_id,
            report_data=bytes(report_data),
        )
        key = report_key(self._store.secret, self._cpu_svn, target, self._report_key_id)
        return Report(body=body, key_id=self._report_key_id, mac=report_mac(key, body))


class SimEnclaveRuntime:
    """What one enclave launched on a :class:`SimPlatform` sees. Created by :meth:`SimPlatform.launch` only."""

    def __init__(self, platform: SimPlatform, identity: EnclaveIdentity) -> None:
        self._platform = platform
        self._identity = identity

    def __repr__(self) -> str:
        return f"SimEnclaveRuntime(mrenclave={self._identity.mrenclave.hex()}, kind='simulated')"

    @property
    def identity(self) -> EnclaveIdentity:
        """This enclave's identity, as EINIT established it."""
        return self._identity

    @property
    def platform_kind(self) -> str:
        """Always ``"simulated"``."""
        return KIND

    def get_key(self, request: KeyRequest) -> bytes:
        """EGETKEY (SEAL or REPORT); ``PlatformError`` EGETKEY_* when refused."""
        return self._platform._egetkey(self._identity, request)

    def target_info(self) -> TargetInfo:
        """This enclave's TARGETINFO."""
        return target_of(self._identity)

    def create_report(self, target: TargetInfo, report_data: bytes) -> Report:
        """EREPORT for ``target`` with 64 bytes of ``report_data``."""
        return self._platform._ereport(self._identity, target, report_data)

    def verify_report(self, report: Report) -> None:
        """``PlatformError`` REPORT_MAC_MISMATCH unless ``report`` was created on this platform for this enclave."""
        key = self.get_key(KeyRequest(key_name=int(KeyName.REPORT), key_id=report.key_id))
        if not hmac.compare_digest(report_mac(key, report.body), report.mac):
            raise PlatformError(
                "REPORT_MAC_MISMATCH",
                "the REPORT's MAC does not verify: it was not created on this platform for this enclave, or it was "
                "modified",
            )

    def qe_target_info(self) -> TargetInfo:
        """The quoting enclave's TARGETINFO."""
        return self._platform.quoting_enclave.target_info()

    def get_quote(self, report: Report) -> bytes:
        """DCAP quote v3 for ``report`` (which must be targeted at the QE); ``PlatformError`` QE_* if refused."""
        return self._platform.quoting_enclave.quote(report).to_bytes()
