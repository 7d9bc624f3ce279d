"""Appraisal of attestation evidence against a policy: the verifier's decision, check by check.

:func:`appraise` runs every check in a fixed order and returns an :class:`AppraisalResult` listing each one with
``ok``, a stable ``code`` when it fails and a sentence a person can act on. The evidence is *affirming* only when
every check passes. Checks and their failure codes:

==================  ==========================================================================================
``quote_format``    QUOTE_INVALID — the quote is not a DCAP quote v3 with a PEM PCK chain
``trust_root``      UNTRUSTED_ROOT — the quote's PCK chain ends in a root the policy does not list
``collateral``      COLLATERAL_MISSING, COLLATERAL_UNAVAILABLE, COLLATERAL_EXPIRED, COLLATERAL_NOT_YET_VALID
``debug``           DEBUG_ENCLAVE — a debug enclave (its memory is readable by the host) and the policy refuses it
``quote``           what ``dcap-qvl`` refuses (QUOTE_INVALID, QUOTE_BAD_SIGNATURE, CERTIFICATE_REVOKED, TCB_REVOKED…)
``tcb_status``      TCB_STATUS_NOT_ACCEPTED
``advisories``      ADVISORY_REJECTED
``mrenclave``       MRENCLAVE_NOT_ALLOWED       (when the policy has an MRENCLAVE allow-list)
``mrsigner``        MRSIGNER_NOT_ALLOWED        (when the policy has MRSIGNER values)
``isv_prod_id``     ISVPRODID_NOT_ALLOWED       (when the policy sets an ISVPRODID)
``isv_svn``         ISVSVN_TOO_LOW
``key_binding``     KEY_BINDING_MISMATCH, PUBLIC_KEY_INVALID — REPORTDATA ≠ SHA-256(SPKI ‖ nonce) ‖ 0³²
``nonce``           whatever the caller's ``nonce_check`` raises (NONCE_UNKNOWN, NONCE_EXPIRED, NONCE_MISMATCH)
==================  ==========================================================================================

When the quote itself cannot be verified, the checks that depend on its content are listed as ``SKIPPED``.
The enclave identity is always taken from the verified quote, never from the evidence's informational
``enclave`` field.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot.errors import FormatError, SgxIotError, VerificationError
from sgx_iot.sgx.dcap_quote import DcapQuote
from sgx_iot.sgx.keybinding import check_key_binding
from sgx_iot.sgx.report import ReportBody
from sgx_iot.verify.collateral import CollateralSource, FixedCollateral, validity_windows
from sgx_iot.verify.dcap import QuoteCollateralV3, verify_dcap_quote
from sgx_iot.verify.evidence import Evidence
from sgx_iot.verify.policy import INTEL_SGX_ROOT_CA_SHA256, Policy, TrustRoot

SKIPPED = "SKIPPED"
NonceCheck = Callable[[bytes], None]
"""Called with the evidence's nonce; raises ``VerificationError`` (NONCE_UNKNOWN, NONCE_EXPIRED, …) if not fresh."""


@dataclass(frozen=True)
class Check:
    """One named check: passed (``ok``) or not, with a stable ``code`` when not, and a sentence."""

    name: str
    ok: bool
    code: str | None
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.name, "ok": self.ok, "code": self.code, "sentence": self.sentence}


@dataclass(frozen=True)
class EnclaveClaims:
    """The attested enclave's identity, from the verified quote."""

    mrenclave: bytes
    mrsigner: bytes
    isv_prod_id: int
    isv_svn: int
    debug: bool

    @classmethod
    def from_body(cls, body: ReportBody) -> EnclaveClaims:
        """From a quote's ISV report body."""
        return cls(body.mr_enclave, body.mr_signer, body.isv_prod_id, body.isv_svn, body.attributes.debug)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (hex)."""
        return {"mrenclave": self.mrenclave.hex(), "mrsigner": self.mrsigner.hex(), "isv_prod_id": self.isv_prod_id,
                "isv_svn": self.isv_svn, "debug": self.debug}


@dataclass(frozen=True)
class AppraisalResult:
    """What the verifier concluded about one piece of evidence (see the module docstring)."""

    checks: tuple[Check, ...]
    policy_id: str
    appraised_at: int
    platform: str
    public_key_pem: str
    nonce: bytes
    enclave: EnclaveClaims | None = None
    tcb_status: str | None = None
    advisory_ids: tuple[str, ...] = ()
    root: str | None = None
    root_name: str | None = None
    platform_id: str | None = None
    """Hex PPID of the attested platform (from its PCK certificate) once the quote verified."""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def affirming(self) -> bool:
        """True only when every check passed."""
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        """The checks that failed (skipped ones excluded)."""
        return tuple(c for c in self.checks if not c.ok and c.code != SKIPPED)

    @property
    def code(self) -> str | None:
        """The code of the first failed check (``None`` when affirming)."""
        return self.failures[0].code if self.failures else None

    @property
    def sentence(self) -> str:
        """The first failure's sentence, or a one-line summary of success."""
        if self.failures:
            return self.failures[0].sentence
        e = self.enclave
        assert e is not None
        return (f"enclave {e.mrenclave.hex()[:16]}… on a {self.platform} platform (TCB {self.tcb_status}) passed "
                "every check")

    def raise_for_status(self) -> None:
        """Raise ``VerificationError`` with the first failure's code and sentence unless affirming."""
        if not self.affirming:
            first = self.failures[0] if self.failures else self.checks[-1]
            raise VerificationError(first.code or "APPRAISAL_FAILED", first.sentence)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The evidence's public key (raises ``FormatError`` if it is not a P-256 PEM key)."""
        return load_p256_public_key(self.public_key_pem)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (bytes as hex)."""
        return {
            "affirming": self.affirming,
            "code": self.code,
            "sentence": self.sentence,
            "policy_id": self.policy_id,
            "appraised_at": self.appraised_at,
            "platform": self.platform,
            "platform_id": self.platform_id,
            "root": self.root,
            "root_name": self.root_name,
            "enclave": self.enclave.to_dict() if self.enclave else None,
            "tcb_status": self.tcb_status,
            "advisory_ids": list(self.advisory_ids),
            "nonce": self.nonce.hex(),
            "public_key": self.public_key_pem,
            "checks": [c.to_dict() for c in self.checks],
        }


def load_p256_public_key(pem: str | bytes) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from PEM SubjectPublicKeyInfo (``FormatError`` otherwise)."""
    try:
        key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise FormatError("public_key", "pem", None, "not a PEM public key of a supported algorithm") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise FormatError("public_key", "curve", None, "not a P-256 (secp256r1) public key")
    return key


def expect_nonce(expected: bytes) -> NonceCheck:
    """A ``nonce_check`` for offline appraisal: the evidence must carry exactly ``expected`` (NONCE_MISMATCH)."""

    def check(nonce: bytes) -> None:
        if not hmac.compare_digest(nonce, expected):
            raise VerificationError("NONCE_MISMATCH", "the evidence was made for another challenge than the one expected")

    return check


def _unix(now: datetime | int) -> int:
    if isinstance(now, datetime):
        if now.tzinfo is None:
            now = now.replace(tzinfo=timezone.utc)
        return int(now.timestamp())
    if isinstance(now, bool) or not isinstance(now, int):
        raise TypeError("now must be a datetime or Unix seconds")
    return now


class _Checks:
    def __init__(self) -> None:
        self.items: list[Check] = []

    def ok(self, name: str, sentence: str) -> None:
        self.items.append(Check(name, True, None, sentence))

    def fail(self, name: str, code: str, sentence: str) -> None:
        self.items.append(Check(name, False, code, sentence))

    def check(self, name: str, passed: bool, code: str, ok_sentence: str, fail_sentence: str) -> None:
        if passed:
            self.ok(name, ok_sentence)
        else:
            self.fail(name, code, fail_sentence)

    def skip(self, *names: str, why: str) -> None:
        for name in names:
            self.items.append(Check(name, False, SKIPPED, f"not evaluated: {why}"))


def _after_quote(policy: Policy) -> tuple[str, ...]:
    """The checks that need a verified quote, as this policy has them."""
    reference = (("mrenclave",) if policy.mrenclaves else ()) + (("mrsigner",) if policy.mrsigners else ()) + (
        ("isv_prod_id",) if policy.isv_prod_id is not None else ())
    return ("tcb_status", "advisories", *reference, "isv_svn", "key_binding", "nonce")


def appraise(
    evidence: Evidence,
    policy: Policy,
    *,
    now: datetime | int,
    nonce_check: NonceCheck | None = None,
    collateral: CollateralSource | QuoteCollateralV3 | None = None,
) -> AppraisalResult:
    """Appraise ``evidence`` under ``policy`` at time ``now``.

    ``collateral`` is a source (file, PCCS…) or collateral itself; when ``None``, the collateral carried in the
    evidence is used. ``nonce_check`` decides whether the evidence's nonce is fresh (the service passes its
    challenge store; offline, :func:`expect_nonce`); when ``None`` freshness is *not* checked and the ``nonce``
    check says so. Never raises for bad evidence: every problem is a failed check in the result.
    """
    t = _unix(now)
    checks = _Checks()
    after = _after_quote(policy)
    result: dict[str, Any] = {}

    def finish() -> AppraisalResult:
        platform = result.pop("platform", evidence.platform)
        return AppraisalResult(tuple(checks.items), policy.id, t, platform, evidence.public_key_pem,
                               evidence.nonce, **result)

    # 1. The quote parses, and its PCK chain names a root.
    try:
        quote = DcapQuote.parse(evidence.quote)
        chain_root = _chain_root(quote.signature_data.certification.cert_type,
                                 quote.signature_data.certification.data)
    except FormatError as exc:
        checks.fail("quote_format", "QUOTE_INVALID", f"the quote is not a DCAP quote v3 with its PCK chain: {exc}")
        checks.skip("trust_root", "collateral", "debug", "quote", *after, why="the quote does not parse")
        return finish()
    checks.ok("quote_format", "DCAP quote v3 with a PEM PCK certificate chain")

    # 2. The chain's root is one the policy trusts.
    root = _match_root(policy, chain_root.sha256)
    if root is None:
        checks.fail("trust_root", "UNTRUSTED_ROOT",
                    f"the quote chains to {chain_root.subject!r} (sha256 {chain_root.sha256[:16]}…), "
                    "a root this policy does not trust (a simulated platform's root must be listed in the policy's "
                    "[trust] table)")
        checks.skip("collateral", "debug", "quote", *after, why="the quote's root is not trusted")
        return finish()
    root_der = root.der or chain_root.der
    result["root"] = "sha256:" + root.sha256
    # What the platform is follows from the root it chains to, never from the evidence's own claim: only real SGX
    # hardware chains to Intel's root; any other root a policy lists is a simulation's.
    result["platform"] = "gramine" if root.sha256 == INTEL_SGX_ROOT_CA_SHA256 else "simulated"
    result["root_name"] = root.name if root.der is not None and root.name else f"{chain_root.name} (pinned by SHA-256)"
    checks.ok("trust_root", f"the quote chains to a trusted root: {result['root_name']}")

    # 3. Collateral is available and current.
    coll = _collateral(evidence, collateral, t, checks)
    if coll is None:
        checks.skip("debug", "quote", *after, why="no usable collateral")
        return finish()

    # 4. Debug enclaves, read before the cryptographic check so the refusal says why.
    if quote.report_body.attributes.debug and not policy.allow_debug:
        checks.fail("debug", "DEBUG_ENCLAVE",
                    "the enclave runs in debug mode (the host can read its memory, keys included); the policy refuses it")
        checks.skip("quote", *after, why="debug enclave refused")
        return finish()
    checks.ok("debug", "debug enclave allowed by the policy" if quote.report_body.attributes.debug
              else "production enclave (not debug)")

    # 5. dcap-qvl: signatures, chain, CRLs, TCB info and QE identity.
    try:
        verified = verify_dcap_quote(evidence.quote, coll, root_ca_der=root_der, now=t)
    except VerificationError as exc:
        checks.fail("quote", exc.code, exc.message)
        checks.skip(*after, why="the quote did not verify")
        return finish()
    except (SgxIotError, ValueError) as exc:
        checks.fail("quote", "QUOTE_INVALID", f"the quote or its collateral could not be used: {exc}")
        checks.skip(*after, why="the quote did not verify")
        return finish()
    checks.ok("quote", "quote signature, QE report, PCK chain, CRLs, TCB info and QE identity verified")
    body = verified.report_body
    enclave = EnclaveClaims.from_body(body)
    result.update(enclave=enclave, tcb_status=verified.status, advisory_ids=tuple(verified.advisory_ids),
                  platform_id=verified.ppid.hex() or None)

    # 6. TCB status and advisories.
    checks.check("tcb_status", verified.status in policy.accepted_tcb_statuses, "TCB_STATUS_NOT_ACCEPTED",
                 f"platform TCB status {verified.status} is accepted",
                 f"platform TCB status {verified.status} is not accepted by the policy (accepted: "
                 f"{', '.join(sorted(policy.accepted_tcb_statuses))}); update the platform's microcode/software")
    rejected = sorted(set(verified.advisory_ids) & policy.rejected_advisories)
    checks.check("advisories", not rejected, "ADVISORY_REJECTED",
                 f"no rejected advisory applies ({', '.join(verified.advisory_ids) or 'none'})",
                 f"the platform is affected by advisories the policy rejects: {', '.join(rejected)}")

    # 7. Reference values.
    if policy.mrenclaves:
        checks.check("mrenclave", enclave.mrenclave in policy.mrenclaves, "MRENCLAVE_NOT_ALLOWED",
                     f"MRENCLAVE {enclave.mrenclave.hex()} is in the allow-list",
                     f"MRENCLAVE {enclave.mrenclave.hex()} is not in the policy's allow-list: this is not the audited "
                     "enclave build")
    if policy.mrsigners:
        checks.check("mrsigner", enclave.mrsigner in policy.mrsigners, "MRSIGNER_NOT_ALLOWED",
                     f"MRSIGNER {enclave.mrsigner.hex()} is allowed",
                     f"MRSIGNER {enclave.mrsigner.hex()} is not an allowed enclave signer")
    if policy.isv_prod_id is not None:
        checks.check("isv_prod_id", enclave.isv_prod_id == policy.isv_prod_id, "ISVPRODID_NOT_ALLOWED",
                     f"ISVPRODID {enclave.isv_prod_id} is the expected product",
                     f"ISVPRODID {enclave.isv_prod_id} is not the expected product {policy.isv_prod_id}")
    checks.check("isv_svn", enclave.isv_svn >= policy.min_isv_svn, "ISVSVN_TOO_LOW",
                 f"ISVSVN {enclave.isv_svn} ≥ {policy.min_isv_svn}",
                 f"ISVSVN {enclave.isv_svn} is below the minimum {policy.min_isv_svn}: an outdated enclave version")

    # 8. The key and the nonce are bound into REPORTDATA.
    try:
        key = load_p256_public_key(evidence.public_key_pem)
        check_key_binding(body.report_data, key, evidence.nonce)
        checks.ok("key_binding", "REPORTDATA = SHA-256(public key ‖ nonce): the key was made by this enclave "
                                 "for this challenge")
    except FormatError as exc:
        checks.fail("key_binding", "PUBLIC_KEY_INVALID", f"the evidence's public key is unusable: {exc}")
    except VerificationError as exc:
        checks.fail("key_binding", exc.code, exc.message)

    # 9. Freshness.
    if nonce_check is None:
        checks.ok("nonce", "nonce freshness not checked (offline appraisal without an expected nonce)")
    else:
        try:
            nonce_check(evidence.nonce)
            checks.ok("nonce", "the nonce was issued by this verifier, is unused and has not expired")
        except VerificationError as exc:
            checks.fail("nonce", exc.code, exc.message)
    return finish()


@dataclass(frozen=True)
class _ChainRoot:
    sha256: str
    der: bytes
    subject: str
    name: str


@functools.lru_cache(maxsize=64)
def _chain_root(cert_type: int, cert_data: bytes) -> _ChainRoot:
    """The last certificate of a quote's PCK chain (cached: every quote of a platform carries the same chain)."""
    from sgx_iot.sgx.dcap_quote import CertificationData

    cert = CertificationData(cert_type, cert_data).pem_chain()[-1]
    try:  # cryptography parses some fields lazily: a malformed certificate fails here
        der = cert.public_bytes(Encoding.DER)
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        subject = cert.subject.rfc4514_string()
    except ValueError as exc:
        raise FormatError("CertificationData", "cert_data", None, f"malformed root certificate: {exc}") from None
    return _ChainRoot(hashlib.sha256(der).hexdigest(), der, subject, str(cns[0].value) if cns else subject)


def _match_root(policy: Policy, fingerprint: str) -> TrustRoot | None:
    for root in policy.trusted_roots():
        if hmac.compare_digest(root.sha256, fingerprint):
            return root
    return None


def _collateral(
    evidence: Evidence, source: CollateralSource | QuoteCollateralV3 | None, now: int, checks: _Checks
) -> QuoteCollateralV3 | None:
    try:
        if source is None:
            if evidence.collateral is None:
                checks.fail("collateral", "COLLATERAL_MISSING",
                            "no collateral: the evidence carries none and no file or PCCS was given")
                return None
            source = FixedCollateral(evidence.collateral)
        elif isinstance(source, QuoteCollateralV3):
            source = FixedCollateral(source)
        coll = source.collateral_for(evidence.quote, now=now)
        windows = validity_windows(coll)
    except VerificationError as exc:
        checks.fail("collateral", exc.code, exc.message)
        return None
    except FormatError as exc:
        checks.fail("collateral", "COLLATERAL_INVALID", f"the collateral is malformed: {exc}")
        return None
    for w in windows:
        if now < w.issued:
            checks.fail("collateral", "COLLATERAL_NOT_YET_VALID",
                        f"the {w.name} was issued at {_iso(w.issued)}, after the verification time {_iso(now)}")
            return None
        if now > w.until:
            checks.fail("collateral", "COLLATERAL_EXPIRED",
                        f"the {w.name} expired at {_iso(w.until + 1)} (verification time {_iso(now)}); "
                        "fetch fresh collateral")
            return None
    nxt = min(w.until for w in windows)
    checks.ok("collateral", f"TCB info, QE identity and CRLs are current (until {_iso(nxt)})")
    return coll


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
