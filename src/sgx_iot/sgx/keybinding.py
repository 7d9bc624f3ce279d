"""How a public key is bound to an enclave through the 64-byte REPORTDATA of its report.

Two bindings exist:

* **sgx-iot** (:func:`bind_key`): ``REPORTDATA = SHA-256(SubjectPublicKeyInfo DER ‖ nonce) ‖ 32 zero bytes``.
  The enclave computes it from the key it derives from its sealed private key and the verifier's nonce, so a
  quote proves both "this key lives in this enclave" and "this quote was made after the nonce was issued".
* **legacy** (:func:`legacy_public_key`): the original IoT gateway put the raw P-256 public key in REPORTDATA as
  ``x ‖ y``, each 32-byte half **little-endian** (``sgx_ec256_public_t``), with no nonce (SGX_FORMATS §5, §8.1).

Pure functions: no I/O, no state.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot.errors import FormatError, VerificationError
from sgx_iot.sgx.ecdsa import public_key_from_xy, public_key_to_xy

REPORT_DATA_SIZE = 64
_COORD = 32


def bind_key(public_key: ec.EllipticCurvePublicKey, nonce: bytes) -> bytes:
    """The 64-byte REPORTDATA binding ``public_key`` and ``nonce``: SHA-256(SPKI DER ‖ nonce) ‖ 0³²."""
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki + nonce).digest() + bytes(_COORD)


def check_key_binding(report_data: bytes, public_key: ec.EllipticCurvePublicKey, nonce: bytes) -> None:
    """Raise ``VerificationError("KEY_BINDING_MISMATCH")`` unless ``report_data == bind_key(public_key, nonce)``.

    The comparison is constant-time. ``report_data`` must be the full 64-byte field (``FormatError`` otherwise).
    """
    _check_size(report_data)
    if not hmac.compare_digest(report_data, bind_key(public_key, nonce)):
        raise VerificationError(
            "KEY_BINDING_MISMATCH",
            "the quote's REPORTDATA does not bind this public key and nonce: the key was not produced by the "
            "attested enclave for this challenge",
        )


def legacy_public_key(report_data: bytes) -> ec.EllipticCurvePublicKey:
    """The P-256 public key the original gateway enclave put in REPORTDATA (x‖y, little-endian halves).

    Raises ``FormatError`` when ``report_data`` is not 64 bytes or the coordinates are not a point of P-256.
    """
    _check_size(report_data)
    try:
        return public_key_from_xy(_swap_halves(report_data))
    except FormatError:
        raise FormatError("REPORTDATA", "public_key", 0, "not a P-256 point (x‖y, little-endian halves)") from None


def legacy_report_data(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The legacy REPORTDATA for ``public_key``: x ‖ y, each 32-byte half little-endian."""
    if not isinstance(public_key.curve, ec.SECP256R1):
        raise FormatError("REPORTDATA", "public_key", None, f"expected a P-256 key, got {public_key.curve.name}")
    return _swap_halves(public_key_to_xy(public_key))


def _swap_halves(xy: bytes) -> bytes:
    """Big-endian x‖y ⇄ little-endian x‖y (reverse each 32-byte half)."""
    return xy[:_COORD][::-1] + xy[_COORD:][::-1]


def _check_size(report_data: bytes) -> None:
    if len(report_data) != REPORT_DATA_SIZE:
        raise FormatError(
            "REPORTDATA", "report_data", None, f"expected {REPORT_DATA_SIZE} bytes, got {len(report_data)}"
        )
