"""Attestation results as EAR tokens (draft-ietf-rats-ear, JWT serialisation, profile
``tag:github.com,2023:veraison/ear``), signed ES256 by the verifier's P-256 key.

Claims of a token (JSON names of the Veraison EAR profile)::

    {
      "eat_profile": "tag:github.com,2023:veraison/ear",
      "iat": 1700000000, "exp": 1700086400,
      "eat_nonce": "<base64url of the attestation nonce>",
      "ear.verifier-id": {"developer": "sgx-iot", "build": "sgx-iot 0.1.0"},
      "sub": "<gateway name>",                       (when issued for a named gateway)
      "submods": {
        "sgx-iot-gateway": {
          "ear.status": "affirming" | "warning" | "contraindicated",
          "ear.trustworthiness-vector": {"instance-identity": 2, "configuration": 2, "executables": 2, "hardware": 2},
          "ear.appraisal-policy-id": "sha256:…",
          "sgx-iot.platform": "simulated" | "gramine",
          "sgx-iot.enclave": {"mrenclave": hex, "mrsigner": hex, "isv_prod_id": int, "isv_svn": int, "debug": bool},
          "sgx-iot.tcb": {"status": "UpToDate", "advisory_ids": [], "root": "sha256:…"},
          "sgx-iot.key": {<JWK of the gateway's attested P-256 public key>}
        }
      }
    }

``ear.status`` is *affirming* when every check passed on an UpToDate platform with no advisory, *warning* when
every check passed but the platform's TCB status or advisories were only tolerated by the policy, and
*contraindicated* otherwise. The JWS header carries ``kid`` = RFC 7638 thumbprint of the verifier's key.
A relying party verifies a token offline with :func:`verify_ear` and the verifier's public key.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot import __version__
from sgx_iot.errors import FormatError, VerificationError
from sgx_iot.verify.appraise import AppraisalResult

EAR_PROFILE = "tag:github.com,2023:veraison/ear"
SUBMOD = "sgx-iot-gateway"
DEFAULT_LIFETIME = 24 * 3600
DEFAULT_VERIFIER_ID: Mapping[str, str] = {"developer": "sgx-iot", "build": f"sgx-iot {__version__}"}
# AR4SI trustworthiness tiers.
_AFFIRMING, _WARNING, _CONTRAINDICATED = 2, 32, 96


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The JWK (RFC 7517) of a P-256 public key: ``{"kty": "EC", "crv": "P-256", "x", "y"}``."""
    numbers = public_key.public_numbers()
    return {"kty": "EC", "crv": "P-256", "x": _b64url(numbers.x.to_bytes(32, "big")),
            "y": _b64url(numbers.y.to_bytes(32, "big"))}


def jwk_public_key(jwk: Mapping[str, Any]) -> ec.EllipticCurvePublicKey:
    """The P-256 public key of a JWK (``FormatError`` if it is not one)."""
    try:
        if jwk["kty"] != "EC" or jwk["crv"] != "P-256":
            raise ValueError("not an EC P-256 key")
        x, y = _unb64url(jwk["x"]), _unb64url(jwk["y"])
        if len(x) != 32 or len(y) != 32:
            raise ValueError("coordinates must be 32 bytes")
        return ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"),
                                             ec.SECP256R1()).public_key()
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError("JWK", "key", None, f"not a P-256 JWK: {exc}") from None


def jwk_thumbprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 SHA-256 thumbprint (base64url) of a P-256 public key."""
    jwk = public_jwk(public_key)
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def ear_status(result: AppraisalResult) -> str:
    """``affirming``, ``warning`` or ``contraindicated`` (see the module docstring)."""
    if not result.affirming:
        return "contraindicated"
    if result.tcb_status != "UpToDate" or result.advisory_ids:
        return "warning"
    return "affirming"


def _vector(result: AppraisalResult) -> dict[str, int]:
    by_name = {c.name: c for c in result.checks}

    def tier(*names: str) -> int:
        present = [by_name[n] for n in names if n in by_name]
        return _AFFIRMING if present and all(c.ok for c in present) else _CONTRAINDICATED

    configuration = tier("tcb_status", "advisories", "debug")
    if configuration == _AFFIRMING and (result.tcb_status != "UpToDate" or result.advisory_ids):
        configuration = _WARNING
    return {
        "instance-identity": tier("key_binding", "nonce"),
        "configuration": configuration,
        "executables": tier("mrenclave", "mrsigner", "isv_prod_id", "isv_svn"),
        "hardware": tier("trust_root", "quote"),
    }


def ear_claims(
    result: AppraisalResult,
    *,
    iat: int,
    lifetime: int = DEFAULT_LIFETIME,
    verifier_id: Mapping[str, str] = DEFAULT_VERIFIER_ID,
    subject: str | None = None,
) -> dict[str, Any]:
    """The claims set of the EAR for ``result`` (see the module docstring)."""
    submod: dict[str, Any] = {
        "ear.status": ear_status(result),
        "ear.trustworthiness-vector": _vector(result),
        "ear.appraisal-policy-id": result.policy_id,
        "sgx-iot.platform": result.platform,
        "sgx-iot.tcb": {"status": result.tcb_status, "advisory_ids": list(result.advisory_ids), "root": result.root},
    }
    if result.enclave is not None:
        submod["sgx-iot.enclave"] = result.enclave.to_dict()
    try:
        submod["sgx-iot.key"] = public_jwk(result.public_key())
    except FormatError:
        pass  # an unusable key is already a failed check; the token then has no key to name
    if not result.affirming:
        submod["sgx-iot.failures"] = [{"check": c.name, "code": c.code} for c in result.failures]
    claims: dict[str, Any] = {
        "eat_profile": EAR_PROFILE,
        "iat": iat,
        "exp": iat + lifetime,
        "eat_nonce": _b64url(result.nonce),
        "ear.verifier-id": dict(verifier_id),
        "submods": {SUBMOD: submod},
    }
    if subject is not None:
        claims["sub"] = subject
    return claims


def issue_ear(
    result: AppraisalResult,
    signing_key: ec.EllipticCurvePrivateKey,
    *,
    iat: int,
    lifetime: int = DEFAULT_LIFETIME,
    verifier_id: Mapping[str, str] = DEFAULT_VERIFIER_ID,
    subject: str | None = None,
) -> str:
    """Sign the EAR for ``result`` (ES256, ``kid`` = thumbprint of the verifier key) and return the compact JWT."""
    if not isinstance(signing_key, ec.EllipticCurvePrivateKey) or not isinstance(signing_key.curve, ec.SECP256R1):
        raise TypeError("the verifier's EAR signing key must be a P-256 private key")
    claims = ear_claims(result, iat=iat, lifetime=lifetime, verifier_id=verifier_id, subject=subject)
    kid = jwk_thumbprint(signing_key.public_key())
    return jwt.encode(claims, signing_key, algorithm="ES256", headers={"kid": kid, "typ": "JWT"})


def verify_ear(
    token: str,
    public_key: ec.EllipticCurvePublicKey,
    *,
    now: int | None = None,
    nonce: bytes | None = None,
) -> dict[str, Any]:
    """Verify an EAR's ES256 signature with the verifier's ``public_key`` and return its claims.

    Checks the profile, that it has not expired at ``now`` (Unix seconds; default: the current time, via PyJWT)
    and, when given, that ``eat_nonce`` is ``nonce``. Raises ``VerificationError`` with code ``EAR_INVALID``
    (bad signature, other key, malformed), ``EAR_EXPIRED`` or ``EAR_NONCE_MISMATCH``.
    """
    options: dict[str, Any] = {"require": ["iat", "exp", "eat_profile", "submods"], "verify_exp": now is None,
                               "verify_iat": False, "verify_nbf": False}
    try:
        claims = jwt.decode(token, public_key, algorithms=["ES256"], options=options)
    except jwt.ExpiredSignatureError:
        raise VerificationError("EAR_EXPIRED", "the attestation result token has expired") from None
    except jwt.PyJWTError as exc:
        raise VerificationError("EAR_INVALID", f"the attestation result token does not verify: {exc}") from None
    if claims.get("eat_profile") != EAR_PROFILE:
        raise VerificationError("EAR_INVALID", f"unexpected EAR profile {claims.get('eat_profile')!r}")
    if now is not None and not (isinstance(claims["exp"], int) and now <= claims["exp"]):
        raise VerificationError("EAR_EXPIRED", "the attestation result token has expired")
    if nonce is not None and claims.get("eat_nonce") != _b64url(nonce):
        raise VerificationError("EAR_NONCE_MISMATCH", "the attestation result token is for another nonce")
    return claims
