"""P-256 encodings used by SGX quotes: raw 64-byte signatures (r‖s) and public keys (x‖y), both big-endian.

(The legacy sgx-iot REPORTDATA stores x‖y with each half little-endian: that variant lives in ``keybinding``.)
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from sgx_iot.errors import FormatError

_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def raw_to_der(sig64: bytes) -> bytes:
    """64-byte big-endian r‖s → DER ``ECDSA-Sig-Value`` (``FormatError`` unless exactly 64 bytes)."""
    if len(sig64) != 64:
        raise FormatError("EcdsaSignature", "r||s", min(len(sig64), 64), f"expected 64 bytes, got {len(sig64)}")
    return encode_dss_signature(int.from_bytes(sig64[:32], "big"), int.from_bytes(sig64[32:], "big"))


def der_to_raw(der: bytes) -> bytes:
    """DER ``ECDSA-Sig-Value`` → 64-byte big-endian r‖s (``FormatError`` if not DER or r/s out of range)."""
    try:
        r, s = decode_dss_signature(der)
    except ValueError:
        raise FormatError("EcdsaSignature", "der", 0, "not a DER ECDSA signature") from None
    if not (0 < r < _P256_ORDER and 0 < s < _P256_ORDER):
        raise FormatError("EcdsaSignature", "der", 0, "r or s is outside the P-256 range")
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def public_key_from_xy(xy: bytes) -> ec.EllipticCurvePublicKey:
    """64-byte big-endian x‖y → P-256 public key (``FormatError`` if the size is wrong or the point is invalid)."""
    if len(xy) != 64:
        raise FormatError("P256PublicKey", "x||y", min(len(xy), 64), f"expected 64 bytes, got {len(xy)}")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + xy)
    except ValueError:
        raise FormatError("P256PublicKey", "x||y", 0, "not a point on the P-256 curve") from None


def public_key_to_xy(key: ec.EllipticCurvePublicKey) -> bytes:
    """P-256 public key → 64-byte big-endian x‖y."""
    if not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"expected a P-256 key, got {key.curve.name}")
    numbers = key.public_numbers()
    return numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")
