"""EAR tokens: claims per draft-ietf-rats-ear (Veraison profile), ES256 signature verifiable offline."""

from __future__ import annotations

import base64
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot.errors import FormatError, VerificationError
from sgx_iot.verify.appraise import AppraisalResult, Check, EnclaveClaims
from sgx_iot.verify.ear import (
    EAR_PROFILE,
    SUBMOD,
    ear_status,
    issue_ear,
    jwk_public_key,
    jwk_thumbprint,
    public_jwk,
    verify_ear,
)

VERIFIER = ec.generate_private_key(ec.SECP256R1())
OTHER = ec.generate_private_key(ec.SECP256R1())
GATEWAY = ec.generate_private_key(ec.SECP256R1())
NONCE = bytes(range(32))
NAMES = ("quote_format", "trust_root", "collateral", "debug", "quote", "tcb_status", "advisories", "mrenclave",
         "isv_svn", "key_binding", "nonce")


def result(*, failing: str | None = None, tcb: str = "UpToDate", advisories: tuple[str, ...] = ()) -> AppraisalResult:
    checks = tuple(Check(n, n != failing, None if n != failing else "MRENCLAVE_NOT_ALLOWED", "s") for n in NAMES)
    pem = GATEWAY.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return AppraisalResult(checks, "sha256:" + "ab" * 32, 1_700_000_000, "simulated", pem, NONCE,
                           EnclaveClaims(b"\x01" * 32, b"\x02" * 32, 0, 3, False), tcb, advisories,
                           "sha256:" + "cd" * 32, "sim root")


def test_claims_and_signature() -> None:
    token = issue_ear(result(), VERIFIER, iat=1_700_000_000, lifetime=600, subject="gw-1")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["kid"] == jwk_thumbprint(VERIFIER.public_key())
    claims = verify_ear(token, VERIFIER.public_key(), now=1_700_000_100, nonce=NONCE)
    assert claims["eat_profile"] == EAR_PROFILE == "tag:github.com,2023:veraison/ear"
    assert (claims["iat"], claims["exp"], claims["sub"]) == (1_700_000_000, 1_700_000_600, "gw-1")
    assert base64.urlsafe_b64decode(claims["eat_nonce"] + "=" * (-len(claims["eat_nonce"]) % 4)) == NONCE
    assert claims["ear.verifier-id"]["developer"] == "sgx-iot"
    sub = claims["submods"][SUBMOD]
    assert sub["ear.status"] == "affirming"
    assert sub["ear.appraisal-policy-id"] == "sha256:" + "ab" * 32
    assert sub["ear.trustworthiness-vector"] == {"instance-identity": 2, "configuration": 2, "executables": 2,
                                                 "hardware": 2}
    assert sub["sgx-iot.enclave"] == {"mrenclave": "01" * 32, "mrsigner": "02" * 32, "isv_prod_id": 0,
                                      "isv_svn": 3, "debug": False}
    assert sub["sgx-iot.tcb"]["status"] == "UpToDate"
    assert sub["sgx-iot.platform"] == "simulated"
    assert jwk_public_key(sub["sgx-iot.key"]).public_numbers() == GATEWAY.public_key().public_numbers()


def test_other_key_refuses() -> None:
    token = issue_ear(result(), VERIFIER, iat=1_700_000_000)
    with pytest.raises(VerificationError) as info:
        verify_ear(token, OTHER.public_key(), now=1_700_000_000)
    assert info.value.code == "EAR_INVALID"


def test_tampered_payload_refuses() -> None:
    token = issue_ear(result(), VERIFIER, iat=1_700_000_000)
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["submods"][SUBMOD]["ear.status"] = "affirming"
    claims["submods"][SUBMOD]["sgx-iot.enclave"]["mrenclave"] = "ff" * 32
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(VerificationError) as info:
        verify_ear(f"{head}.{forged}.{sig}", VERIFIER.public_key(), now=1_700_000_000)
    assert info.value.code == "EAR_INVALID"


def test_alg_none_and_hs256_refused() -> None:
    claims = {"eat_profile": EAR_PROFILE, "iat": 1, "exp": 2**40, "submods": {}}
    unsigned = jwt.encode(claims, None, algorithm="none")
    pem = VERIFIER.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    for token in (unsigned, jwt.encode(claims, pem[:40], algorithm="HS256")):
        with pytest.raises(VerificationError) as info:
            verify_ear(token, VERIFIER.public_key(), now=10)
        assert info.value.code == "EAR_INVALID"


def test_expiry_and_nonce() -> None:
    token = issue_ear(result(), VERIFIER, iat=1_000, lifetime=100)
    verify_ear(token, VERIFIER.public_key(), now=1_100)
    with pytest.raises(VerificationError) as info:
        verify_ear(token, VERIFIER.public_key(), now=1_101)
    assert info.value.code == "EAR_EXPIRED"
    with pytest.raises(VerificationError) as info:
        verify_ear(token, VERIFIER.public_key())  # wall clock: long after 1970
    assert info.value.code == "EAR_EXPIRED"
    with pytest.raises(VerificationError) as info:
        verify_ear(token, VERIFIER.public_key(), now=1_050, nonce=b"other nonce 0123")
    assert info.value.code == "EAR_NONCE_MISMATCH"
    with pytest.raises(VerificationError):
        verify_ear("not.a.token", VERIFIER.public_key(), now=1)


def test_status_tiers() -> None:
    assert ear_status(result()) == "affirming"
    assert ear_status(result(tcb="SWHardeningNeeded")) == "warning"
    assert ear_status(result(advisories=("INTEL-SA-00615",))) == "warning"
    failed = result(failing="mrenclave")
    assert ear_status(failed) == "contraindicated"
    claims = verify_ear(issue_ear(failed, VERIFIER, iat=5), VERIFIER.public_key(), now=5)
    sub = claims["submods"][SUBMOD]
    assert sub["ear.trustworthiness-vector"]["executables"] == 96
    assert sub["sgx-iot.failures"] == [{"check": "mrenclave", "code": "MRENCLAVE_NOT_ALLOWED"}]
    warn = verify_ear(issue_ear(result(tcb="SWHardeningNeeded"), VERIFIER, iat=5), VERIFIER.public_key(), now=5)
    assert warn["submods"][SUBMOD]["ear.trustworthiness-vector"]["configuration"] == 32


def test_jwk_helpers() -> None:
    jwk = public_jwk(GATEWAY.public_key())
    assert jwk_public_key(jwk).public_numbers() == GATEWAY.public_key().public_numbers()
    for bad in ({}, {"kty": "RSA"}, {**jwk, "x": "AA"}, {**jwk, "crv": "P-384"}, {**jwk, "y": jwk["x"]}):
        with pytest.raises(FormatError):
            jwk_public_key(bad)


def test_signing_key_must_be_p256() -> None:
    with pytest.raises(TypeError):
        issue_ear(result(), ec.generate_private_key(ec.SECP384R1()), iat=1)  # type: ignore[arg-type]
