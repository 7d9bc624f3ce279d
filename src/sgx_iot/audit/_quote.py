"""Signature-only checks of a DCAP quote, for an auditor who has the quote but no collateral.

Without collateral (TCB info, QE identity, CRLs) the TCB status cannot be evaluated, but the quote can still be
shown to come from a genuine quoting enclave: the PCK chain leads to the pinned root, the PCK key signed the QE
report, the QE report binds the attestation key, and the attestation key signed the quote. With collateral, use
:func:`sgx_iot.verify.dcap.verify_dcap_quote` instead (dcap-qvl does all of this and more).
"""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot.errors import UsageError, VerificationError
from sgx_iot.sgx.dcap_quote import DcapQuote
from sgx_iot.verify.roots import common_name

MAX_CHAIN = 5


def verify_quote_signatures(quote: DcapQuote, root_der: bytes, *, now: int) -> None:
    """Raise ``VerificationError`` unless ``quote`` is signed by a quoting enclave certified under ``root_der``.

    Codes: ``CERTIFICATE_CHAIN_INVALID`` (chain broken, too long, an issuer that is not a CA, not an EC leaf),
    ``UNTRUSTED_ROOT`` (the chain does not end at the pinned root), ``CERTIFICATE_EXPIRED`` /
    ``CERTIFICATE_NOT_YET_VALID`` (at ``now``), then the quote's own ``QE_REPORT_BAD_SIGNATURE``,
    ``QE_REPORT_DATA_MISMATCH``, ``QUOTE_BAD_SIGNATURE``. ``UsageError`` when ``now`` is not a representable time.
    """
    try:
        if isinstance(now, bool) or not isinstance(now, int) or now < 0:
            raise ValueError(now)
        at = datetime.datetime.fromtimestamp(now, datetime.UTC)
    except (ValueError, OverflowError, OSError):
        raise UsageError(f"the verification time {now!r} is not a representable Unix time in seconds") from None
    root = x509.load_der_x509_certificate(root_der)
    chain = quote.pck_chain()
    if not chain or len(chain) > MAX_CHAIN:
        raise VerificationError("CERTIFICATE_CHAIN_INVALID", f"the PCK chain has {len(chain)} certificates")
    if chain[-1] == root:
        chain = chain[:-1]
    if not chain:
        raise VerificationError("CERTIFICATE_CHAIN_INVALID", "the PCK chain holds only the root")
    for cert, issuer in zip(chain, [*chain[1:], root], strict=True):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            code = "UNTRUSTED_ROOT" if issuer is root else "CERTIFICATE_CHAIN_INVALID"
            raise VerificationError(code, f"{common_name(cert)!r} is not issued by {common_name(issuer)!r}") from None
        if not _is_ca(issuer):
            raise VerificationError("CERTIFICATE_CHAIN_INVALID", f"{common_name(issuer)!r} signs "
                                    f"{common_name(cert)!r} but is not a CA (BasicConstraints)")
    for cert in [*chain, root]:
        if at < cert.not_valid_before_utc:
            raise VerificationError("CERTIFICATE_NOT_YET_VALID", f"{common_name(cert)!r} is not valid before "
                                    f"{cert.not_valid_before_utc:%Y-%m-%d}")
        if at > cert.not_valid_after_utc:
            raise VerificationError("CERTIFICATE_EXPIRED",
                                    f"{common_name(cert)!r} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    try:
        pck_key = chain[0].public_key()
    except (ValueError, UnsupportedAlgorithm):
        pck_key = None
    if not isinstance(pck_key, ec.EllipticCurvePublicKey):
        raise VerificationError("CERTIFICATE_CHAIN_INVALID", "the PCK certificate does not hold an EC key")
    quote.verify_qe_report_signature(pck_key)
    quote.verify_qe_report_binding()
    quote.verify_isv_signature()


def _is_ca(cert: x509.Certificate) -> bool:
    """True when ``cert`` carries BasicConstraints with CA set (as dcap-qvl requires of every issuer)."""
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError):
        return False
