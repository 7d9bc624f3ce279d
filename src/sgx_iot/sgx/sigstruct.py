"""SIGSTRUCT (``enclave_css_t``, 1808 B): the enclave author's signed statement of MRENCLAVE and identity.

Layout and signing rules: SGX_FORMATS.md §3. The signature is RSA-3072 with public exponent 3, RSASSA-PKCS1-v1.5
over SHA-256 of bytes ``[0:128] ‖ [900:1028]``; MODULUS, SIGNATURE, Q1 and Q2 are stored little-endian;
MRSIGNER = SHA-256 of the 384 MODULUS bytes as stored.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass, replace
from typing import ClassVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sgx_iot.errors import UsageError, VerificationError
from sgx_iot.sgx._codec import Layout, LayoutStructure, check_fields_match
from sgx_iot.sgx.attributes import Attributes

SIGSTRUCT_HEADER = bytes.fromhex("06000000e10000000000010000000000")
"""HEADER as sgx_sign writes it (bytes 12..15 are the SDK's ``type``; bit 31 set for ``ReleaseType`` 1)."""
SIGSTRUCT_HEADER2 = bytes.fromhex("01010000600000006000000001000000")
"""HEADER2 constant."""
RELEASE_TYPE_BIT = 1 << 31
KEY_BYTES = 384
EXPONENT = 3

_ZERO_ATTRIBUTES = Attributes()


@dataclass(frozen=True)
class Sigstruct(LayoutStructure):
    """A SIGSTRUCT; every byte (reserved ones included) is a field, so any 1808 bytes round-trip.

    :meth:`parse` does not check the signature: :meth:`verify` does.
    """

    header: bytes = bytes(16)
    vendor: int = 0
    date: int = 0
    header2: bytes = bytes(16)
    swdefined: int = 0
    modulus: bytes = bytes(KEY_BYTES)
    exponent: int = 0
    signature: bytes = bytes(KEY_BYTES)
    misc_select: int = 0
    misc_mask: int = 0
    cet_attributes: int = 0
    cet_attributes_mask: int = 0
    isv_family_id: bytes = bytes(16)
    attributes: Attributes = _ZERO_ATTRIBUTES
    attribute_mask: Attributes = _ZERO_ATTRIBUTES
    enclave_hash: bytes = bytes(32)
    isv_ext_prod_id: bytes = bytes(16)
    isv_prod_id: int = 0
    isv_svn: int = 0
    q1: bytes = bytes(KEY_BYTES)
    q2: bytes = bytes(KEY_BYTES)
    reserved1: bytes = bytes(84)
    reserved2: bytes = bytes(2)
    reserved3: bytes = bytes(16)
    reserved4: bytes = bytes(12)

    SIZE: ClassVar[int] = 1808

    @classmethod
    def build(
        cls,
        *,
        enclave_hash: bytes,
        isv_prod_id: int,
        isv_svn: int,
        attributes: Attributes,
        attribute_mask: Attributes,
        misc_select: int = 0,
        misc_mask: int = 0xFFFFFFFF,
        date: datetime.date | None = None,
        release: bool = True,
    ) -> Sigstruct:
        """An unsigned SIGSTRUCT with the header values sgx_sign writes (vendor 0, BCD date, HEADER/HEADER2).

        ``date`` defaults to today (UTC). ``release`` sets bit 31 of the header ``type`` word as sgx_sign does for
        ``<ReleaseType>1</ReleaseType>``; the SDK default (and every real vector) has it clear: pass
        ``release=False`` to match them. It has no effect on MRENCLAVE or on the DEBUG attribute.
        """
        day = date or datetime.datetime.now(datetime.timezone.utc).date()
        header = bytearray(SIGSTRUCT_HEADER)
        if release:
            header[12:16] = (int.from_bytes(header[12:16], "little") | RELEASE_TYPE_BIT).to_bytes(4, "little")
        return cls(
            header=bytes(header),
            vendor=0,
            date=int(f"{day.year:04d}{day.month:02d}{day.day:02d}", 16),
            header2=SIGSTRUCT_HEADER2,
            enclave_hash=enclave_hash,
            isv_prod_id=isv_prod_id,
            isv_svn=isv_svn,
            attributes=attributes,
            attribute_mask=attribute_mask,
            misc_select=misc_select,
            misc_mask=misc_mask,
        )

    # --- signing -------------------------------------------------------------------------------------------

    def signed_message(self) -> bytes:
        """The 256 signed bytes: ``[0:128] ‖ [900:1028]``."""
        raw = self.to_bytes()
        return raw[0:128] + raw[900:1028]

    def sign(self, private_key: rsa.RSAPrivateKey) -> Sigstruct:
        """A copy signed with ``private_key`` (RSA-3072, e=3): MODULUS, EXPONENT, SIGNATURE, Q1, Q2 filled in.

        Raises ``UsageError`` for another key type or size.
        """
        numbers = private_key.public_key().public_numbers()
        if private_key.key_size != 3072 or numbers.e != EXPONENT:
            raise UsageError(
                f"a SIGSTRUCT signing key must be RSA-3072 with public exponent 3, not RSA-{private_key.key_size} "
                f"e={numbers.e}; create one with generate_signing_key()"
            )
        signature = private_key.sign(self.signed_message(), padding.PKCS1v15(), hashes.SHA256())
        s = int.from_bytes(signature, "big")
        q1, q2 = _q1_q2(s, numbers.n)
        return replace(
            self,
            modulus=numbers.n.to_bytes(KEY_BYTES, "little"),
            exponent=EXPONENT,
            signature=s.to_bytes(KEY_BYTES, "little"),
            q1=q1.to_bytes(KEY_BYTES, "little"),
            q2=q2.to_bytes(KEY_BYTES, "little"),
        )

    def public_key(self) -> rsa.RSAPublicKey:
        """The signer's RSA public key (MODULUS, EXPONENT); ``VerificationError`` SIGSTRUCT_BAD_KEY if unusable."""
        n = int.from_bytes(self.modulus, "little")
        try:
            return rsa.RSAPublicNumbers(self.exponent, n).public_key()
        except ValueError as exc:
            raise VerificationError(
                "SIGSTRUCT_BAD_KEY", f"the SIGSTRUCT modulus/exponent is not an RSA key: {exc}"
            ) from None

    def verify(self) -> None:
        """Check EXPONENT = 3, the RSA signature over :meth:`signed_message`, and Q1/Q2.

        Raises ``VerificationError`` SIGSTRUCT_BAD_EXPONENT, SIGSTRUCT_BAD_SIGNATURE or SIGSTRUCT_BAD_Q1Q2.
        """
        if self.exponent != EXPONENT:
            raise VerificationError(
                "SIGSTRUCT_BAD_EXPONENT", f"the SIGSTRUCT exponent is {self.exponent}; SGX requires 3"
            )
        n = int.from_bytes(self.modulus, "little")
        s = int.from_bytes(self.signature, "little")
        if n.bit_length() != 3072 or s >= n:
            raise VerificationError(
                "SIGSTRUCT_BAD_SIGNATURE", "the SIGSTRUCT is not signed (modulus is not a 3072-bit RSA modulus)"
            )
        try:
            self.public_key().verify(
                s.to_bytes(KEY_BYTES, "big"), self.signed_message(), padding.PKCS1v15(), hashes.SHA256()
            )
        except (InvalidSignature, VerificationError):
            raise VerificationError(
                "SIGSTRUCT_BAD_SIGNATURE", "the SIGSTRUCT signature does not verify with its own modulus"
            ) from None
        q1, q2 = _q1_q2(s, n)
        if int.from_bytes(self.q1, "little") != q1 or int.from_bytes(self.q2, "little") != q2:
            raise VerificationError("SIGSTRUCT_BAD_Q1Q2", "the SIGSTRUCT Q1/Q2 values do not match its signature")

    # --- derived values ------------------------------------------------------------------------------------

    @property
    def mrsigner(self) -> bytes:
        """MRSIGNER: SHA-256 of MODULUS as stored (little-endian)."""
        return hashlib.sha256(self.modulus).digest()

    @property
    def release_type(self) -> bool:
        """Bit 31 of the header ``type`` word."""
        return bool(int.from_bytes(self.header[12:16], "little") & RELEASE_TYPE_BIT)

    def date_value(self) -> datetime.date | None:
        """DATE decoded from BCD ``0xYYYYMMDD``, or None when it is not a valid BCD date."""
        text = f"{self.date:08x}"
        if not text.isdigit():
            return None
        try:
            return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
        except ValueError:
            return None

    def date_string(self) -> str:
        """DATE as ``YYYY-MM-DD``, or as ``0x…`` hex when it is not a valid BCD date."""
        value = self.date_value()
        return value.isoformat() if value else f"0x{self.date:08x}"


def _q1_q2(s: int, n: int) -> tuple[int, int]:
    """Q1 = ⌊S²/M⌋, Q2 = ⌊(S³ − Q1·S·M)/M⌋ (the values that let EINIT verify with no division)."""
    q1 = s * s // n
    q2 = (s * s * s - q1 * s * n) // n
    return q1, q2


def generate_signing_key() -> rsa.RSAPrivateKey:
    """A fresh RSA-3072 key with public exponent 3, as SGX enclave signing requires."""
    return rsa.generate_private_key(public_exponent=EXPONENT, key_size=3072)


Sigstruct.LAYOUT = Layout(
    "Sigstruct",
    1808,
    [
        ("header", 16, bytes),
        ("vendor", 4, int),
        ("date", 4, int),
        ("header2", 16, bytes),
        ("swdefined", 4, int),
        ("reserved1", 84, bytes),
        ("modulus", KEY_BYTES, bytes),
        ("exponent", 4, int),
        ("signature", KEY_BYTES, bytes),
        ("misc_select", 4, int),
        ("misc_mask", 4, int),
        ("cet_attributes", 1, int),
        ("cet_attributes_mask", 1, int),
        ("reserved2", 2, bytes),
        ("isv_family_id", 16, bytes),
        ("attributes", 16, Attributes),
        ("attribute_mask", 16, Attributes),
        ("enclave_hash", 32, bytes),
        ("reserved3", 16, bytes),
        ("isv_ext_prod_id", 16, bytes),
        ("isv_prod_id", 2, int),
        ("isv_svn", 2, int),
        ("reserved4", 12, bytes),
        ("q1", KEY_BYTES, bytes),
        ("q2", KEY_BYTES, bytes),
    ],
)
check_fields_match(Sigstruct, Sigstruct.LAYOUT)
