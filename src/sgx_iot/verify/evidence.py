"""The evidence bundle a gateway uploads: quote + public key + nonce (+ optional collateral).

JSON document, strictly parsed (unknown or missing fields are refused)::

    {
      "format": "sgx-iot-evidence/1",
      "platform": "simulated" | "gramine",
      "quote": "<base64 DCAP quote v3>",
      "public_key": "<PEM SubjectPublicKeyInfo, P-256>",
      "nonce": "<hex>",
      "enclave": {"mrenclave": hex, "mrsigner": hex, "isv_prod_id": int, "isv_svn": int, "debug": bool},
      "collateral": <QuoteCollateralV3 JSON object> | null
    }

``enclave`` is informational (what the gateway believes it runs); a verifier must take the identity from the
quote, never from this field. The REPORTDATA binding is :func:`sgx_iot.sgx.keybinding.bind_key`.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from sgx_iot.errors import FormatError

FORMAT = "sgx-iot-evidence/1"
_FIELDS = {"format", "platform", "quote", "public_key", "nonce", "enclave", "collateral"}
_ENCLAVE_FIELDS = {"mrenclave", "mrsigner", "isv_prod_id", "isv_svn", "debug"}
MAX_EVIDENCE_BYTES = 256 * 1024


@dataclass(frozen=True)
class Evidence:
    """Attestation evidence of one gateway key."""

    platform: str
    quote: bytes
    public_key_pem: str
    nonce: bytes
    enclave: dict[str, Any] = field(default_factory=dict)
    collateral: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (see the module docstring)."""
        return {
            "format": FORMAT,
            "platform": self.platform,
            "quote": base64.b64encode(self.quote).decode("ascii"),
            "public_key": self.public_key_pem,
            "nonce": self.nonce.hex(),
            "enclave": dict(self.enclave),
            "collateral": self.collateral,
        }

    def to_json(self) -> str:
        """Serialise as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, doc: Any) -> Evidence:
        """Parse the JSON-ready form; raise ``FormatError`` naming the bad field."""
        if not isinstance(doc, dict):
            raise FormatError("evidence", "(document)", None, "must be a JSON object")
        missing = _FIELDS - doc.keys()
        unknown = doc.keys() - _FIELDS
        if missing:
            raise FormatError("evidence", sorted(missing)[0], None, "missing field")
        if unknown:
            raise FormatError("evidence", sorted(unknown)[0], None, "unknown field")
        if doc["format"] != FORMAT:
            raise FormatError("evidence", "format", None, f"expected {FORMAT!r}, got {doc['format']!r}")
        if doc["platform"] not in ("simulated", "gramine"):
            raise FormatError("evidence", "platform", None, "must be 'simulated' or 'gramine'")
        quote = _decode(doc["quote"], "quote", _b64)
        nonce = _decode(doc["nonce"], "nonce", bytes.fromhex)
        if not 16 <= len(nonce) <= 64:
            raise FormatError("evidence", "nonce", None, "must be 16 to 64 bytes")
        if not isinstance(doc["public_key"], str) or "BEGIN PUBLIC KEY" not in doc["public_key"]:
            raise FormatError("evidence", "public_key", None, "must be a PEM public key")
        enclave = doc["enclave"]
        if not isinstance(enclave, dict) or not enclave.keys() <= _ENCLAVE_FIELDS:
            raise FormatError("evidence", "enclave", None, f"must be an object with fields {sorted(_ENCLAVE_FIELDS)}")
        collateral = doc["collateral"]
        if collateral is not None and not isinstance(collateral, dict):
            raise FormatError("evidence", "collateral", None, "must be a QuoteCollateralV3 object or null")
        return cls(doc["platform"], quote, doc["public_key"], nonce, enclave, collateral)

    @classmethod
    def from_json(cls, text: str | bytes) -> Evidence:
        """Parse evidence JSON text; raise ``FormatError`` when it is not valid evidence."""
        if len(text) > MAX_EVIDENCE_BYTES:
            raise FormatError("evidence", "(document)", None, f"larger than {MAX_EVIDENCE_BYTES} bytes")
        try:
            doc = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise FormatError("evidence", "(document)", None, f"not JSON: {exc}") from None
        except RecursionError:
            raise FormatError("evidence", "(document)", None, "JSON nested too deeply") from None
        return cls.from_dict(doc)


def _b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _decode(value: Any, name: str, decoder: Any) -> bytes:
    if not isinstance(value, str):
        raise FormatError("evidence", name, None, "must be a string")
    try:
        return decoder(value)
    except (ValueError, binascii.Error):
        raise FormatError("evidence", name, None, "is not correctly encoded") from None
