"""Sealed data (``sgx_sealed_data_t``) and its AES-128-GCM sealing, exactly as ``sgx_seal_data`` / ``sgx_unseal_data``.

Layout (SGX_FORMATS.md §4)::

    key_request (512) ‖ plain_text_offset u32 ‖ reserved (12) ‖ payload_size u32 ‖ reserved (12) ‖ payload_tag (16)
    ‖ payload = ciphertext (plain_text_offset bytes) ‖ additional MAC text (cleartext)

Crypto: AES-128-GCM with a 12-byte all-zero IV, the additional MAC text as AAD and the EGETKEY key derived from the
stored key request; the caller (the platform) derives that key — this module only applies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sgx_iot.errors import VerificationError
from sgx_iot.sgx._codec import Reader, u32
from sgx_iot.sgx.keyrequest import KeyRequest

HEADER_SIZE = 560
GCM_IV = bytes(12)
_MAX_U32 = 0xFFFFFFFF


def sealed_data_size(plain_len: int, aad_len: int) -> int:
    """``sgx_calc_sealed_data_size``: 560 + plaintext length + additional MAC text length."""
    if plain_len < 0 or aad_len < 0 or plain_len + aad_len > _MAX_U32 - HEADER_SIZE:
        raise ValueError(f"cannot seal {plain_len} + {aad_len} bytes")
    return HEADER_SIZE + plain_len + aad_len


@dataclass(frozen=True)
class SealedData:
    """An ``sgx_sealed_data_t`` blob. ``payload_size`` must equal ``len(payload)``."""

    key_request: KeyRequest
    plain_text_offset: int
    payload_size: int
    payload_tag: bytes
    payload: bytes
    reserved1: bytes = bytes(12)
    reserved2: bytes = bytes(12)

    HEADER_SIZE: ClassVar[int] = HEADER_SIZE

    def __post_init__(self) -> None:
        if len(self.payload_tag) != 16 or len(self.reserved1) != 12 or len(self.reserved2) != 12:
            raise ValueError("SealedData: payload_tag must be 16 bytes and reserved fields 12 bytes")
        if self.payload_size != len(self.payload) or self.payload_size > _MAX_U32 - HEADER_SIZE:
            raise ValueError(f"SealedData.payload_size {self.payload_size} != len(payload) {len(self.payload)}")
        if not 0 <= self.plain_text_offset <= self.payload_size:
            raise ValueError(f"SealedData.plain_text_offset {self.plain_text_offset} is outside the payload")

    @classmethod
    def parse(cls, data: bytes) -> SealedData:
        """A whole blob; ``FormatError`` on truncation, a ``payload_size`` that disagrees with the data length, or
        a ``plain_text_offset`` beyond the payload."""
        reader = Reader(data, "SealedData")
        key_request = KeyRequest.parse(reader.bytes(KeyRequest.SIZE, "key_request"))
        plain_text_offset = reader.u32("plain_text_offset")
        reserved1 = reader.bytes(12, "reserved1")
        payload_size = reader.u32("payload_size")
        reserved2 = reader.bytes(12, "reserved2")
        payload_tag = reader.bytes(16, "payload_tag")
        if payload_size != reader.remaining:
            raise reader.fail(
                "payload_size", f"says {payload_size} payload bytes but {reader.remaining} follow", offset=528
            )
        if plain_text_offset > payload_size:
            raise reader.fail(
                "plain_text_offset",
                f"{plain_text_offset} is beyond the {payload_size}-byte payload",
                offset=512,
            )
        payload = reader.rest("payload")
        return cls(key_request, plain_text_offset, payload_size, payload_tag, payload, reserved1, reserved2)

    def to_bytes(self) -> bytes:
        """The blob bytes (:func:`sealed_data_size` long)."""
        return b"".join(
            [
                self.key_request.to_bytes(),
                u32(self.plain_text_offset),
                self.reserved1,
                u32(self.payload_size),
                self.reserved2,
                self.payload_tag,
                self.payload,
            ]
        )

    @property
    def encrypted_text(self) -> bytes:
        """The ciphertext (first ``plain_text_offset`` payload bytes)."""
        return self.payload[: self.plain_text_offset]

    @property
    def additional_mac_text(self) -> bytes:
        """The authenticated cleartext after the ciphertext (may be empty)."""
        return self.payload[self.plain_text_offset :]

    def unseal(self, key: bytes) -> tuple[bytes, bytes]:
        """``(plaintext, additional MAC text)``; ``VerificationError`` SEALED_DATA_MAC_MISMATCH if the tag fails
        (wrong key, i.e. another platform or enclave identity, or a modified blob)."""
        aad = self.additional_mac_text
        try:
            plaintext = AESGCM(_check_key(key)).decrypt(GCM_IV, self.encrypted_text + self.payload_tag, aad)
        except InvalidTag:
            raise VerificationError(
                "SEALED_DATA_MAC_MISMATCH",
                "the sealed data does not authenticate with this key (other platform or enclave, or modified blob)",
            ) from None
        return plaintext, aad


def seal(key: bytes, key_request: KeyRequest, plaintext: bytes, aad: bytes = b"") -> SealedData:
    """Seal ``plaintext`` (and authenticate ``aad``) under the 16-byte ``key`` that EGETKEY derived from
    ``key_request``, as ``sgx_seal_data`` does. The key request's KEYID must be fresh per blob (fixed IV)."""
    sealed_data_size(len(plaintext), len(aad))
    out = AESGCM(_check_key(key)).encrypt(GCM_IV, plaintext, aad)
    ciphertext, tag = out[:-16], out[-16:]
    return SealedData(
        key_request=key_request,
        plain_text_offset=len(ciphertext),
        payload_size=len(ciphertext) + len(aad),
        payload_tag=tag,
        payload=ciphertext + aad,
    )


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes) or len(key) != 16:
        raise ValueError("a seal key is 16 bytes (AES-128)")
    return key
