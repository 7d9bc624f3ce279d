"""``gateway register``: prove the gateway's key to a cloud and record the registration.

challenge (the cloud's nonce) → attest in the enclave (REPORTDATA binds the enclave-derived key and that nonce)
→ ``POST /v1/gateways`` with the evidence → on success, ``<state>/registration.json`` (written atomically)
records the gateway name, the cloud URL, the EAR token and the registered key's fingerprint. ``gateway send``
and ``gateway run`` take the name and the cloud from it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot._fs import atomic_write
from sgx_iot.errors import FormatError, UsageError
from sgx_iot.gateway.attestation import collect_evidence
from sgx_iot.gateway.cloud_client import CloudClient, normalise_url
from sgx_iot.gateway.outbox import Outbox
from sgx_iot.gateway.session import GatewaySession
from sgx_iot.gateway.state import GatewayState, json_document
from sgx_iot.verify.evidence import Evidence
from sgx_iot.verify.readings import check_gateway_name

REGISTRATION_FILE = "registration.json"
REGISTRATION_FORMAT = "sgx-iot-gateway-registration/1"
_MAX_FILE = 256 * 1024


def key_fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    """SHA-256 (hex) of the key's SubjectPublicKeyInfo DER (the cloud's ``key_sha256``)."""
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


@dataclass(frozen=True)
class Registration:
    """``registration.json``: where and as what the gateway is registered.

    ``ear`` is the cloud's attestation-result token (kept so that the operator can show it; it is checked by
    whoever relies on it with the verifier's public key, ``GET /v1/verifier``); ``ear_expires_at`` is read from
    it without verification, for display only.
    """

    name: str
    cloud: str
    key_sha256: str
    ear: str
    registered_at: int
    ear_expires_at: int | None
    policy_id: str
    tcb_status: str
    enclave: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps({"format": REGISTRATION_FORMAT, **asdict(self)}, indent=2, sort_keys=True) + "\n"

    def summary(self) -> dict[str, Any]:
        """Everything but the token itself (for ``status`` output)."""
        doc = asdict(self)
        doc.pop("ear")
        return doc

    @classmethod
    def from_json(cls, text: str | bytes, source: str = REGISTRATION_FILE) -> Registration:
        """Parse strictly (``FormatError`` naming the field)."""
        doc = json_document(text, source, set(cls.__dataclass_fields__), REGISTRATION_FORMAT)
        check_gateway_name(doc["name"], source)
        kinds = {"cloud": str, "key_sha256": str, "ear": str, "registered_at": int, "policy_id": str,
                 "tcb_status": str, "enclave": dict}  # fmt: skip
        for name, kind in kinds.items():
            if not isinstance(doc[name], kind) or isinstance(doc[name], bool):
                raise FormatError(source, name, None, f"must be a {kind.__name__}")
        if doc["ear_expires_at"] is not None and not isinstance(doc["ear_expires_at"], int):
            raise FormatError(source, "ear_expires_at", None, "must be an integer or null")
        return cls(**doc)


def registration_path(state: GatewayState) -> Path:
    """Where the gateway's registration (cloud, key digest, EAR token) is kept."""
    return state.folder / REGISTRATION_FILE


def load_registration(state: GatewayState) -> Registration | None:
    """The stored registration, or ``None`` if the gateway was never registered."""
    path = registration_path(state)
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_FILE + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > _MAX_FILE:
        raise FormatError(str(path), "(file)", None, f"larger than {_MAX_FILE} bytes")
    return Registration.from_json(data, str(path))


def require_registration(state: GatewayState) -> Registration:
    """The stored registration; ``UsageError`` saying how to register when there is none."""
    registration = load_registration(state)
    if registration is None:
        raise UsageError(f"the gateway in {state.folder} is not registered with a cloud yet; run `sgx-iot gateway "
                         "register --cloud URL --name NAME` first")
    return registration


def store_registration(state: GatewayState, registration: Registration) -> None:
    """Write ``registration.json`` atomically."""
    state.ensure_folder()
    atomic_write(registration_path(state), registration.to_json().encode("utf-8"))


def register(
    state: GatewayState,
    cloud_url: str,
    name: str,
    *,
    session: GatewaySession | None = None,
    client: CloudClient | None = None,
    platform: Path | None = None,
    collateral: bool = False,
) -> Registration:
    """Register the gateway of ``state`` with the cloud at ``cloud_url`` as ``name`` (see the module docstring).

    ``session`` / ``client`` reuse a running enclave / an open cloud connection; otherwise they are opened and
    closed here. ``collateral`` attaches the simulated platform's collateral to the evidence. Raises
    ``VerificationError`` (:class:`~sgx_iot.gateway.cloud_client.CloudRefusal`) with the cloud's code when the
    cloud refuses the evidence; nothing is stored then.
    """
    check_gateway_name(name, "registration")
    url = normalise_url(cloud_url)
    own_client = client is None
    cloud = client if client is not None else CloudClient(url)
    try:
        if session is not None:
            return _register(state, url, name, session, cloud, collateral)
        with GatewaySession(state, platform=platform) as running:
            return _register(state, url, name, running, cloud, collateral)
    finally:
        if own_client:
            cloud.close()


def _register(state: GatewayState, url: str, name: str, session: GatewaySession, cloud: CloudClient,
              collateral: bool) -> Registration:  # fmt: skip
    challenge = cloud.challenge()
    evidence: Evidence = collect_evidence(session, challenge.nonce, collateral=collateral)
    answer = cloud.register(name, evidence)
    ours = key_fingerprint(_load_key(evidence.public_key_pem))
    if not hmac.compare_digest(answer.key_sha256, ours) or answer.name != name:
        raise FormatError("cloud response", "gateway", None, f"the cloud registered {answer.name!r} with key "
                          f"{answer.key_sha256[:16]}…, not {name!r} with this gateway's key {ours[:16]}…")
    registration = Registration(
        name=name, cloud=url, key_sha256=ours, ear=answer.ear, registered_at=int(time.time()),
        ear_expires_at=_ear_expiry(answer.ear), policy_id=answer.policy_id, tcb_status=answer.tcb_status,
        enclave=dict(evidence.enclave),
    )  # fmt: skip
    store_registration(state, registration)
    with Outbox.in_folder(state.folder) as outbox:  # numbering continues after what the cloud already holds
        outbox.continue_from(answer.next_seq)
    return registration


def _load_key(pem: str) -> ec.EllipticCurvePublicKey:
    key = serialization.load_pem_public_key(pem.encode("ascii"))
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def _ear_expiry(token: str) -> int | None:
    """``exp`` of the EAR, read WITHOUT checking its signature (display only)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    exp = claims.get("exp")
    return exp if isinstance(exp, int) and not isinstance(exp, bool) else None
