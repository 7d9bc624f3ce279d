"""The simulated quoting enclave (QE3): REPORT → DCAP quote v3 (SGX_FORMATS.md §6).

Like Intel's QE3 (``quote/enclave/quoting_enclave_3.cpp``) it

1. verifies the incoming REPORT with its own report key (EGETKEY REPORT with the REPORT's KEYID): only an enclave
   on this platform, targeting this QE, can have produced the MAC;
2. signs header ‖ ISV report body with its ECDSA-P256 attestation key;
3. carries its own report (targeted at the PCE) whose REPORTDATA is SHA-256(attestation key ‖ QE auth data) ‖ 0³²,
   signed by the PCK key — the certification of the attestation key;
4. appends certification data type 5: the PEM chain PCK leaf, Processor CA, root (NUL-terminated, like hardware).

Its identity is fixed and public: MRSIGNER :data:`QE_MRSIGNER` (not Intel's), ISVPRODID 1, ISVSVN from the
platform configuration. The QE identity collateral states the same values.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot.errors import PlatformError
from sgx_iot.platform.base import EnclaveIdentity
from sgx_iot.platform.sim.keys import report_key, report_mac, target_of
from sgx_iot.platform.sim.store import PlatformStore
from sgx_iot.sgx.attributes import Attributes
from sgx_iot.sgx.dcap_quote import (
    ATT_KEY_TYPE_ECDSA_P256,
    CERT_TYPE_PCK_CHAIN,
    INTEL_QE_VENDOR_ID,
    QUOTE_VERSION,
    CertificationData,
    DcapQuote,
    QuoteHeader,
    QuoteSignatureData,
)
from sgx_iot.sgx.ecdsa import der_to_raw, public_key_to_xy
from sgx_iot.sgx.report import Report, ReportBody, TargetInfo

QE_MRSIGNER = hashlib.sha256(b"sgx-iot simulated quoting enclave signer (not Intel)").digest()
QE_MRENCLAVE = hashlib.sha256(b"sgx-iot simulated quoting enclave 3").digest()
QE_ISV_PROD_ID = 1
QE_ATTRIBUTES = Attributes(0x15, 0xE7)  # INIT | MODE64BIT | PROVISIONKEY, like Intel's QE3
QE_MISC_SELECT = 0
QE_ATTRIBUTES_MASK = Attributes(0xFFFFFFFFFFFFFFFB, 0)  # as in Intel's QE identity: MODE64BIT and XFRM ignored
QE_MISC_SELECT_MASK = 0xFFFFFFFF

PCE_TARGET = TargetInfo(
    mr_enclave=hashlib.sha256(b"sgx-iot simulated provisioning certification enclave").digest(),
    attributes=Attributes(0x15, 0xE7),
)
"""The (simulated) PCE, which the QE's own report is targeted at."""

DEFAULT_AUTH_DATA = bytes(range(32))
"""QE authentication data: Intel's QE3 default (bytes 0x00..0x1f)."""


class QuotingEnclave:
    """The platform's QE. Holds the attestation key and the PCK key; never exposes them."""

    def __init__(self, store: PlatformStore) -> None:
        self._store = store
        config = store.config
        self._cpu_svn = config.pck.cpu_svn
        self.identity = EnclaveIdentity(
            mrenclave=QE_MRENCLAVE, mrsigner=QE_MRSIGNER, isv_prod_id=QE_ISV_PROD_ID, isv_svn=config.qe_svn,
            attributes=QE_ATTRIBUTES, misc_select=QE_MISC_SELECT, cpu_svn=self._cpu_svn,
        )  # fmt: skip
        self._attestation_xy = public_key_to_xy(store.attestation_key.public_key())
        self._certification = CertificationData(CERT_TYPE_PCK_CHAIN, store.pki.pck_chain_pem().encode() + b"\0")
        self._header = QuoteHeader(
            version=QUOTE_VERSION, att_key_type=ATT_KEY_TYPE_ECDSA_P256, att_key_data_0=0, qe_svn=config.qe_svn,
            pce_svn=config.pck.pce_svn, qe_vendor_id=INTEL_QE_VENDOR_ID, user_data=config.qe_id + bytes(4),
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"QuotingEnclave(isv_svn={self.identity.isv_svn}, kind='simulated')"

    def target_info(self) -> TargetInfo:
        """The QE's TARGETINFO (``sgx_qe_get_target_info``)."""
        return target_of(self.identity)

    def verify_report(self, report: Report) -> None:
        """``PlatformError`` QE_REPORT_MAC_MISMATCH unless ``report`` was MACed for this QE on this platform."""
        key = report_key(self._store.secret, self._cpu_svn, self.target_info(), report.key_id)
        if not hmac.compare_digest(report_mac(key, report.body), report.mac):
            raise PlatformError(
                "QE_REPORT_MAC_MISMATCH",
                "the quoting enclave refused the REPORT: its MAC does not verify (it was not created on this "
                "platform for the QE's target info, or it was modified)",
            )

    def quote(self, report: Report, auth_data: bytes = DEFAULT_AUTH_DATA) -> DcapQuote:
        """Verify ``report`` and turn it into a signed DCAP quote v3."""
        self.verify_report(report)
        if len(auth_data) > 0xFFFF:
            raise PlatformError("QE_BAD_AUTH_DATA", "QE authentication data is longer than 65535 bytes")
        signed = self._header.to_bytes() + report.body.to_bytes()
        isv_signature = _sign(self._store.attestation_key, signed)
        qe_report = ReportBody(
            cpu_svn=self._cpu_svn,
            misc_select=QE_MISC_SELECT,
            attributes=QE_ATTRIBUTES,
            mr_enclave=QE_MRENCLAVE,
            mr_signer=QE_MRSIGNER,
            isv_prod_id=QE_ISV_PROD_ID,
            isv_svn=self.identity.isv_svn,
            report_data=hashlib.sha256(self._attestation_xy + auth_data).digest() + bytes(32),
        )
        signature_data = QuoteSignatureData(
            isv_signature=isv_signature,
            attestation_key=self._attestation_xy,
            qe_report=qe_report,
            qe_report_signature=_sign(self._store.pki.pck_key, qe_report.to_bytes()),
            qe_auth_data=auth_data,
            certification=self._certification,
        )
        return DcapQuote(self._header, report.body, signature_data)


def _sign(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    return der_to_raw(key.sign(message, ec.ECDSA(hashes.SHA256())))
