"""Signed sensor readings: the canonical bytes a gateway's enclave signs, and their verification.

A reading is ``(gateway, seq, timestamp, payload)``. The enclave signs (ECDSA P-256, SHA-256, DER signature)
the **canonical encoding** of those four fields, never a JSON text, so that there is exactly one byte string per
reading::

    "sgx-iot-reading/1" 0x00          domain separation: 18 bytes, never the start of another sgx-iot message
    u16  len(gateway)  gateway        UTF-8 name, 1..64 bytes of [A-Za-z0-9._-], not "." or ".."
    u64  seq                          sequence number, 0 .. 2**63-1, unique per gateway
    i64  timestamp                    Unix time in seconds (as the gateway's clock saw it)
    u32  len(payload)  payload        raw bytes, at most 65536

All integers big-endian. Every length is explicit, so no two different readings encode to the same bytes.

On the wire (HTTP API, gateway outbox) a signed reading is the JSON object
``{"gateway": str, "seq": int, "timestamp": int, "payload": base64, "signature": base64 DER}``
(:meth:`SignedReading.to_dict` / :meth:`SignedReading.from_dict`).
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot.errors import FormatError, VerificationError

DOMAIN = b"sgx-iot-reading/1\x00"
MAX_PAYLOAD = 64 * 1024
MAX_SIGNATURE = 72
MAX_SEQ = 2**63 - 1
GATEWAY_NAME_RE = re.compile(r"(?!\.\.?\Z)[A-Za-z0-9._-]{1,64}")
"""A gateway name (with ``fullmatch``): "." and ".." are not names, as URL paths would read them as folders."""
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_FIELDS = {"gateway", "seq", "timestamp", "payload", "signature"}


def check_gateway_name(name: Any, structure: str = "reading") -> str:
    """Return ``name`` if it is a valid gateway name (1..64 of ``[A-Za-z0-9._-]``, not "." or ".."), else raise
    ``FormatError``."""
    if not isinstance(name, str) or not GATEWAY_NAME_RE.fullmatch(name):
        raise FormatError(structure, "gateway", None, 'must be 1 to 64 characters of A-Z a-z 0-9 . _ - (not "." or '
                          '"..")')
    return name


@dataclass(frozen=True)
class Reading:
    """One sensor reading of one gateway (what is signed; see the module docstring)."""

    gateway: str
    seq: int
    timestamp: int
    payload: bytes

    def __post_init__(self) -> None:
        check_gateway_name(self.gateway)
        for name, low, high in (("seq", 0, MAX_SEQ), ("timestamp", -(2**63), 2**63 - 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise FormatError("reading", name, None, f"must be an integer in [{low}, {high}]")
        if not isinstance(self.payload, bytes) or len(self.payload) > MAX_PAYLOAD:
            raise FormatError("reading", "payload", None, f"must be at most {MAX_PAYLOAD} bytes")

    def to_bytes(self) -> bytes:
        """The canonical encoding that is signed."""
        name = self.gateway.encode("ascii")
        return b"".join(
            (
                DOMAIN,
                struct.pack(">H", len(name)),
                name,
                struct.pack(">QqI", self.seq, self.timestamp, len(self.payload)),
                self.payload,
            )
        )

    @classmethod
    def parse(cls, data: bytes) -> Reading:
        """Decode canonical bytes (``FormatError`` naming the field and offset when they are not)."""
        if not data.startswith(DOMAIN):
            raise FormatError("reading", "domain", 0, f"must start with {DOMAIN!r}")
        offset = len(DOMAIN)

        def take(size: int, field: str) -> bytes:
            nonlocal offset
            if offset + size > len(data):
                raise FormatError("reading", field, offset, f"truncated: need {size} bytes")
            chunk = data[offset : offset + size]
            offset += size
            return chunk

        (name_len,) = struct.unpack(">H", take(2, "gateway_length"))
        try:
            name = take(name_len, "gateway").decode("ascii")
        except UnicodeDecodeError:
            raise FormatError("reading", "gateway", offset - name_len, "not ASCII") from None
        seq, timestamp, payload_len = struct.unpack(">QqI", take(20, "seq"))
        if payload_len > MAX_PAYLOAD:
            raise FormatError("reading", "payload_length", offset - 4, f"larger than {MAX_PAYLOAD}")
        payload = take(payload_len, "payload")
        if offset != len(data):
            raise FormatError("reading", "(end)", offset, "trailing bytes")
        return cls(name, seq, timestamp, payload)


def encode_reading(reading: Reading) -> bytes:
    """The canonical bytes of ``reading`` (same as ``reading.to_bytes()``)."""
    return reading.to_bytes()


def verify_reading(reading: Reading, signature_der: bytes, public_key: ec.EllipticCurvePublicKey) -> None:
    """Raise ``VerificationError("BAD_SIGNATURE")`` unless ``signature_der`` signs ``reading`` under ``public_key``.

    ``signature_der`` is a DER ECDSA-Sig-Value (as the enclave and ``openssl dgst -sha256 -sign`` produce).
    """
    if len(signature_der) > MAX_SIGNATURE + 16:
        raise VerificationError("BAD_SIGNATURE", "the signature is too long to be a P-256 ECDSA signature")
    try:
        public_key.verify(signature_der, reading.to_bytes(), _ECDSA_SHA256)
    except (InvalidSignature, ValueError):
        raise VerificationError(
            "BAD_SIGNATURE",
            f"reading {reading.seq} of gateway {reading.gateway!r} is not signed by the gateway's attested key",
        ) from None


def sign_reading(reading: Reading, private_key: ec.EllipticCurvePrivateKey) -> bytes:
    """DER signature of ``reading`` with a key held in this process (tests and the unattested baseline only:
    a real gateway signs ``reading.to_bytes()`` inside its enclave)."""
    return private_key.sign(reading.to_bytes(), _ECDSA_SHA256)


@dataclass(frozen=True)
class SignedReading:
    """A reading with its DER signature: the unit a gateway uploads."""

    reading: Reading
    signature: bytes

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready wire form (see the module docstring)."""
        r = self.reading
        return {
            "gateway": r.gateway,
            "seq": r.seq,
            "timestamp": r.timestamp,
            "payload": base64.b64encode(r.payload).decode("ascii"),
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, doc: Any) -> SignedReading:
        """Parse the wire form strictly (``FormatError`` naming the field)."""
        if not isinstance(doc, dict):
            raise FormatError("reading", "(document)", None, "must be a JSON object")
        missing, unknown = _FIELDS - doc.keys(), doc.keys() - _FIELDS
        if missing:
            raise FormatError("reading", sorted(missing)[0], None, "missing field")
        if unknown:
            raise FormatError("reading", sorted(unknown)[0], None, "unknown field")
        payload = b64_field(doc["payload"], "payload", MAX_PAYLOAD)
        signature = b64_field(doc["signature"], "signature", MAX_SIGNATURE)
        return cls(Reading(check_gateway_name(doc["gateway"]), doc["seq"], doc["timestamp"], payload), signature)


def b64_field(value: Any, name: str, max_size: int) -> bytes:
    """Decode a standard base64 string field of at most ``max_size`` decoded bytes (``FormatError`` otherwise)."""
    if not isinstance(value, str) or len(value) > 4 * ((max_size + 2) // 3):
        raise FormatError("reading", name, None, f"must be a base64 string of at most {max_size} bytes")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError("reading", name, None, "is not valid base64") from None
