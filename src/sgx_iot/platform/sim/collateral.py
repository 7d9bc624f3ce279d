"""Collateral the simulated platform issues about itself: TCB info v3, QE identity v2, root CA CRL, PCK CRL.

Shaped like Intel PCS v4 collateral (SGX_FORMATS.md §8.2): each JSON document is compact text signed (ECDSA
P-256/SHA-256, signature as raw r‖s hex) by the TCB signing certificate over its exact bytes; the CRLs are DER. The
TCB info places the platform's own TCB (the PCK certificate's CPUSVN components and PCESVN) on a level with the
configured status and advisories; when that status is not UpToDate a newer level (PCESVN + 1) is UpToDate, as in
real TCB info, and an older level (PCESVN − 1) is OutOfDate. A verifier therefore derives exactly the configured
status. Documents are issued at ``now`` minus a minute (tolerating verifiers whose clock is a little behind) and
stay valid for the configured number of days.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot.platform.sim.pki import build_crl
from sgx_iot.platform.sim.qe import (
    QE_ATTRIBUTES,
    QE_ATTRIBUTES_MASK,
    QE_ISV_PROD_ID,
    QE_MISC_SELECT,
    QE_MISC_SELECT_MASK,
    QE_MRSIGNER,
)
from sgx_iot.platform.sim.store import PlatformStore
from sgx_iot.sgx.ecdsa import der_to_raw

CLOCK_SKEW = datetime.timedelta(minutes=1)


def _timestamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


@dataclass(frozen=True)
class SignedDocument:
    """A signed collateral JSON document: the exact signed text and its raw r‖s signature."""

    text: str
    signature: bytes

    def envelope(self, name: str) -> str:
        """The PCS response body: ``{"<name>":<text>,"signature":"<hex>"}`` with ``text`` embedded verbatim."""
        return f'{{"{name}":{self.text},"signature":"{self.signature.hex()}"}}'


@dataclass(frozen=True)
class Validity:
    """The issue and next-update instants of one collateral issue."""

    issue: datetime.datetime
    next_update: datetime.datetime

    @classmethod
    def starting(cls, store: PlatformStore, now: datetime.datetime | None = None) -> Validity:
        """The window for collateral issued at ``now`` (default: the current time)."""
        moment = (now or datetime.datetime.now(datetime.timezone.utc)).replace(microsecond=0) - CLOCK_SKEW
        return cls(moment, moment + datetime.timedelta(days=store.config.tcb.validity_days))


def _sign(store: PlatformStore, text: str) -> SignedDocument:
    der = store.pki.tcb_signing_key.sign(text.encode("utf-8"), ec.ECDSA(hashes.SHA256()))
    return SignedDocument(text, der_to_raw(der))


def tcb_levels(store: PlatformStore) -> list[dict[str, Any]]:
    """The TCB levels, newest first, with the platform's own TCB at the configured status."""
    pck = store.config.pck
    tcb = store.config.tcb
    created = store.config.created

    def level(pce_svn: int, status: str, advisories: tuple[str, ...]) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "tcb": {"sgxtcbcomponents": [{"svn": svn} for svn in pck.tcb_components], "pcesvn": pce_svn},
            "tcbDate": created,
            "tcbStatus": status,
        }
        if advisories:
            entry["advisoryIDs"] = list(advisories)
        return entry

    levels = []
    if tcb.status != "UpToDate":
        levels.append(level(pck.pce_svn + 1, "UpToDate", ()))
    levels.append(level(pck.pce_svn, tcb.status, tcb.advisories))
    if pck.pce_svn > 0 and tcb.status != "Revoked":
        levels.append(level(pck.pce_svn - 1, "OutOfDate", tcb.advisories))
    return levels


def tcb_info(store: PlatformStore, validity: Validity) -> SignedDocument:
    """Signed TCB info v3 for the platform's FMSPC."""
    pck = store.config.pck
    body = {
        "id": "SGX",
        "version": 3,
        "issueDate": _timestamp(validity.issue),
        "nextUpdate": _timestamp(validity.next_update),
        "fmspc": pck.fmspc.hex().upper(),
        "pceId": pck.pce_id.hex().upper(),
        "tcbType": 0,
        "tcbEvaluationDataNumber": store.config.tcb.evaluation_data_number,
        "tcbLevels": tcb_levels(store),
    }
    return _sign(store, _compact(body))


def qe_identity(store: PlatformStore, validity: Validity) -> SignedDocument:
    """Signed QE identity v2 of the simulated quoting enclave."""
    attributes = QE_ATTRIBUTES & QE_ATTRIBUTES_MASK
    body = {
        "id": "QE",
        "version": 2,
        "issueDate": _timestamp(validity.issue),
        "nextUpdate": _timestamp(validity.next_update),
        "tcbEvaluationDataNumber": store.config.tcb.evaluation_data_number,
        "miscselect": (QE_MISC_SELECT & QE_MISC_SELECT_MASK).to_bytes(4, "big").hex().upper(),
        "miscselectMask": QE_MISC_SELECT_MASK.to_bytes(4, "big").hex().upper(),
        "attributes": attributes.to_bytes().hex().upper(),
        "attributesMask": QE_ATTRIBUTES_MASK.to_bytes().hex().upper(),
        "mrsigner": QE_MRSIGNER.hex().upper(),
        "isvprodid": QE_ISV_PROD_ID,
        "tcbLevels": [
            {"tcb": {"isvsvn": store.config.qe_svn}, "tcbDate": store.config.created, "tcbStatus": "UpToDate"}
        ],
    }
    return _sign(store, _compact(body))


def root_ca_crl(store: PlatformStore, validity: Validity) -> bytes:
    """The root CA's CRL (DER; it revokes nothing)."""
    pki = store.pki
    return build_crl(pki.root_cert, pki.root_key, revoked_serials=(), this_update=validity.issue,
                     next_update=validity.next_update)  # fmt: skip


def pck_crl(store: PlatformStore, validity: Validity) -> bytes:
    """The Processor CA's CRL (DER), listing the PCK certificate when it is revoked."""
    pki = store.pki
    revoked = (pki.pck_cert.serial_number,) if store.config.tcb.pck_revoked else ()
    return build_crl(pki.processor_cert, pki.processor_key, revoked_serials=revoked,
                     this_update=validity.issue, next_update=validity.next_update)  # fmt: skip


@dataclass(frozen=True)
class Collateral:
    """Everything a verifier needs besides the quote: dcap-qvl's ``QuoteCollateralV3``."""

    pck_crl_issuer_chain: str
    root_ca_crl: bytes
    pck_crl: bytes
    tcb_info_issuer_chain: str
    tcb_info: str
    tcb_info_signature: bytes
    qe_identity_issuer_chain: str
    qe_identity: str
    qe_identity_signature: bytes

    def to_json(self) -> str:
        """``QuoteCollateralV3`` JSON as dcap-qvl's ``to_json`` writes it (CRLs and signatures in hex)."""
        return json.dumps(
            {
                "pck_crl_issuer_chain": self.pck_crl_issuer_chain,
                "root_ca_crl": self.root_ca_crl.hex(),
                "pck_crl": self.pck_crl.hex(),
                "tcb_info_issuer_chain": self.tcb_info_issuer_chain,
                "tcb_info": self.tcb_info,
                "tcb_info_signature": self.tcb_info_signature.hex(),
                "qe_identity_issuer_chain": self.qe_identity_issuer_chain,
                "qe_identity": self.qe_identity,
                "qe_identity_signature": self.qe_identity_signature.hex(),
            }
        )


def build_collateral(store: PlatformStore, now: datetime.datetime | None = None) -> Collateral:
    """Issue a complete, fresh set of collateral for the platform's current configuration."""
    validity = Validity.starting(store, now)
    tcb = tcb_info(store, validity)
    qe = qe_identity(store, validity)
    pki = store.pki
    return Collateral(
        pck_crl_issuer_chain=pki.pck_crl_issuer_chain_pem(),
        root_ca_crl=root_ca_crl(store, validity),
        pck_crl=pck_crl(store, validity),
        tcb_info_issuer_chain=pki.tcb_issuer_chain_pem(),
        tcb_info=tcb.text,
        tcb_info_signature=tcb.signature,
        qe_identity_issuer_chain=pki.tcb_issuer_chain_pem(),
        qe_identity=qe.text,
        qe_identity_signature=qe.signature,
    )
