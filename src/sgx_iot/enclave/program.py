"""The trusted enclave program: the only code that holds a gateway's private key in the clear.

It serves ECALLs (``docs/ecall-protocol.md``) on the runtime of an EINITed enclave (:mod:`sgx_iot.platform.base`):

* ``PROVISION(policy)``: generate a P-256 key; seal the private scalar as ``sgx_seal_data`` does (key name SEAL,
  policy MRSIGNER by default or MRENCLAVE, fresh random KEYID, attribute mask ``TSEAL_DEFAULT_FLAGSMASK``, misc mask
  ``0xF0000000``, ISVSVN/CPUSVN/CONFIGSVN of this enclave); return the sealed blob and the public key.
* ``PUBLIC_KEY(sealed)``: unseal, return the public key derived from the private key.
* ``ATTEST(sealed, nonce, target)``: unseal; derive the public key (never taken from the host); REPORTDATA =
  :func:`~sgx_iot.sgx.keybinding.bind_key`; return the key, the REPORT and (for the quoting enclave) the quote.
* ``SIGN(sealed, messages…)`` / ``SIGN_DIGESTS(sealed, sha256…)``: unseal once, sign the batch (ECDSA P-256 /
  SHA-256, DER); return the key and the signatures.

Sealed blob (``sgx_sealed_data_t``): plaintext = the 32-byte private scalar, little-endian (``sgx_ec256_private_t``,
as the original gateway sealed it); additional MAC text = :class:`KeyDescriptor` (cleartext, authenticated), which
lets a refusal say *why* a blob does not unseal. This module and everything it imports is measured into MRENCLAVE
(:data:`sgx_iot.enclave.image.TRUSTED_FILES`); the platform runtime is the "hardware" and is not.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from sgx_iot.enclave.protocol import (
    Channel,
    ChannelClosed,
    ErrorCode,
    FrameTooLarge,
    Op,
    STATUS_OK,
    decode_body,
    encode_body,
    encode_error,
    encode_identity,
    stdio_channel,
)
from sgx_iot.errors import FormatError, PlatformError, VerificationError
from sgx_iot.sgx.keybinding import bind_key
from sgx_iot.sgx.keyrequest import KeyName, KeyPolicy, seal_key_request
from sgx_iot.sgx.report import TargetInfo
from sgx_iot.sgx.sealed import SealedData, seal

if TYPE_CHECKING:
    from sgx_iot.platform.base import EnclaveRuntime

MIN_NONCE = 16
MAX_NONCE = 64
MAX_SEALED = 64 * 1024
KEY_CACHE_SIZE = 16
"""Unsealed keys kept in enclave memory, by exact sealed blob, so that a stream of small SIGN batches does not
pay EGETKEY + AES-GCM + key setup every time (a blob that differs in any byte is unsealed afresh)."""
DESCRIPTOR_MAGIC = b"sgx-iot key v1\0\0"
PLATFORM_TAG_KEY_ID = b"sgx-iot platform tag".ljust(32, b"\0")
_SCALAR = 32
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_SEAL_POLICIES = {int(KeyPolicy.MRSIGNER): "MRSIGNER", int(KeyPolicy.MRENCLAVE): "MRENCLAVE"}


class Refusal(Exception):
    """An ECALL refused with a protocol error code and a sentence (internal to the enclave)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class KeyDescriptor:
    """The additional MAC text of a sealed key (112 bytes, cleartext, authenticated by the seal's GCM tag):
    magic (16) ‖ sealer's MRSIGNER (32) ‖ sealer's MRENCLAVE (32) ‖ platform tag (16) ‖ sealer's ATTRIBUTES (16).

    The platform tag is HMAC-SHA256(EGETKEY(SEAL, MRSIGNER, KEYID = :data:`PLATFORM_TAG_KEY_ID`, ISVSVN 0),
    "platform tag")[:16]: equal for every enclave of one signer on one platform, different on another platform.
    """

    mrsigner: bytes
    mrenclave: bytes
    platform_tag: bytes
    attributes: bytes

    SIZE = 112
    _STRUCT = struct.Struct("<16s32s32s16s16s")

    def to_bytes(self) -> bytes:
        return self._STRUCT.pack(DESCRIPTOR_MAGIC, self.mrsigner, self.mrenclave, self.platform_tag, self.attributes)

    @classmethod
    def parse(cls, data: bytes) -> KeyDescriptor | None:
        """The descriptor, or None when ``data`` is not one."""
        if len(data) != cls.SIZE:
            return None
        magic, mrsigner, mrenclave, tag, attributes = cls._STRUCT.unpack(data)
        return cls(mrsigner, mrenclave, tag, attributes) if magic == DESCRIPTOR_MAGIC else None


class EnclaveProgram:
    """The ECALL handlers of one running enclave."""

    def __init__(self, runtime: EnclaveRuntime) -> None:
        self._runtime = runtime
        self._identity = runtime.identity
        self._platform_tag_value: bytes | None = None
        self._keys: OrderedDict[bytes, tuple[ec.EllipticCurvePrivateKey, bytes]] = OrderedDict()
        self._handlers: dict[int, Callable[[list[bytes]], list[bytes]]] = {
            Op.IDENTITY: self._ecall_identity,
            Op.PROVISION: self._ecall_provision,
            Op.PUBLIC_KEY: self._ecall_public_key,
            Op.ATTEST: self._ecall_attest,
            Op.SIGN: self._ecall_sign,
            Op.SIGN_DIGESTS: self._ecall_sign_digests,
        }

    # --- dispatch ------------------------------------------------------------------------------------------

    def run(self, channel: Channel) -> None:
        """Announce the enclave (its first frame: the answer to an implicit IDENTITY request), then serve."""
        try:
            channel.send(self.handle(encode_body(Op.IDENTITY, [])))
        except ChannelClosed:
            return
        self.serve(channel)

    def serve(self, channel: Channel) -> None:
        """Answer requests until the host closes the channel. Never raises for a bad request."""
        while True:
            try:
                body = channel.receive()
            except FrameTooLarge as exc:
                reply = encode_error(ErrorCode.FRAME_TOO_LARGE, f"the request ({exc.length} bytes) is larger than "
                                     "the enclave accepts; send smaller batches")
            except ChannelClosed:
                return
            else:
                reply = self.handle(body)
            try:
                channel.send(reply)
            except ChannelClosed:
                return

    def handle(self, body: bytes) -> bytes:
        """The response body for one request body. Never raises (every failure is an error response)."""
        try:
            try:
                request = decode_body(body, "EcallRequest")
            except FormatError as exc:
                code = ErrorCode.UNSUPPORTED_VERSION if exc.field == "version" else ErrorCode.BAD_FRAME
                raise Refusal(code, f"malformed request: {exc}") from None
            handler = self._handlers.get(request.kind)
            if handler is None:
                raise Refusal(ErrorCode.UNKNOWN_OP, f"unknown ECALL number {request.kind}")
            return encode_body(STATUS_OK, handler(request.items))
        except Refusal as exc:
            return encode_error(exc.code, exc.message)
        except PlatformError as exc:
            return encode_error(ErrorCode.PLATFORM_ERROR, f"{exc.code}: {exc.message}")
        except FormatError as exc:
            return encode_error(ErrorCode.BAD_ARGUMENT, str(exc))
        except Exception as exc:  # noqa: BLE001 - the enclave must answer, never crash; no details may leak
            return encode_error(ErrorCode.INTERNAL, f"internal enclave error ({type(exc).__name__})")

    # --- ECALLs --------------------------------------------------------------------------------------------

    def _ecall_identity(self, items: list[bytes]) -> list[bytes]:
        _arity(items, 0, "IDENTITY")
        return [encode_identity(self._identity), self._runtime.platform_kind.encode("ascii")]

    def _ecall_provision(self, items: list[bytes]) -> list[bytes]:
        _arity(items, 1, "PROVISION")
        if len(items[0]) != 2:
            raise Refusal(ErrorCode.BAD_ARGUMENT, "PROVISION takes a 2-byte key policy")
        policy = int.from_bytes(items[0], "little")
        if policy not in _SEAL_POLICIES:
            raise Refusal(ErrorCode.BAD_ARGUMENT,
                          f"key policy {policy:#x} is neither MRSIGNER (0x2) nor MRENCLAVE (0x1)")
        private_key = ec.generate_private_key(ec.SECP256R1())
        scalar = private_key.private_numbers().private_value.to_bytes(_SCALAR, "little")
        identity = self._identity
        request = seal_key_request(
            key_id=os.urandom(32),
            cpu_svn=identity.cpu_svn,
            isv_svn=identity.isv_svn,
            config_svn=identity.config_svn,
            key_policy=policy,
        )
        descriptor = KeyDescriptor(identity.mrsigner, identity.mrenclave, self._platform_tag(),
                                   identity.attributes.to_bytes())
        sealed = seal(self._runtime.get_key(request), request, scalar, descriptor.to_bytes())
        return [sealed.to_bytes(), _spki(private_key.public_key())]

    def _ecall_public_key(self, items: list[bytes]) -> list[bytes]:
        _arity(items, 1, "PUBLIC_KEY")
        return [self._key(items[0])[1]]

    def _ecall_attest(self, items: list[bytes]) -> list[bytes]:
        _arity(items, 3, "ATTEST")
        sealed, nonce, target_bytes = items
        if not MIN_NONCE <= len(nonce) <= MAX_NONCE:
            raise Refusal(ErrorCode.BAD_ARGUMENT, f"the nonce must be {MIN_NONCE} to {MAX_NONCE} bytes, "
                          f"not {len(nonce)}")
        if target_bytes and len(target_bytes) != TargetInfo.SIZE:
            raise Refusal(ErrorCode.BAD_ARGUMENT, f"TARGETINFO must be {TargetInfo.SIZE} bytes or empty")
        private_key, spki = self._key(sealed)
        public_key = private_key.public_key()
        to_quoting_enclave = not target_bytes
        target = self._runtime.qe_target_info() if to_quoting_enclave else TargetInfo.parse(target_bytes)
        report = self._runtime.create_report(target, bind_key(public_key, nonce))
        # The platform's quoting enclave (not enclave code) turns the REPORT into a quote for the host.
        quote = self._runtime.get_quote(report) if to_quoting_enclave else b""
        return [spki, report.to_bytes(), quote]

    def _ecall_sign(self, items: list[bytes]) -> list[bytes]:
        if not items:
            raise Refusal(ErrorCode.BAD_ARGUMENT, "SIGN takes the sealed key, then the messages")
        private_key, spki = self._key(items[0])
        algorithm = ec.ECDSA(hashes.SHA256())
        sign = private_key.sign
        return [spki] + [sign(message, algorithm) for message in items[1:]]

    def _ecall_sign_digests(self, items: list[bytes]) -> list[bytes]:
        if not items:
            raise Refusal(ErrorCode.BAD_ARGUMENT, "SIGN_DIGESTS takes the sealed key, then SHA-256 digests")
        if any(len(digest) != 32 for digest in items[1:]):
            raise Refusal(ErrorCode.BAD_ARGUMENT, "every digest must be a 32-byte SHA-256 value")
        private_key, spki = self._key(items[0])
        algorithm = ec.ECDSA(Prehashed(hashes.SHA256()))
        sign = private_key.sign
        return [spki] + [sign(digest, algorithm) for digest in items[1:]]

    # --- sealing -------------------------------------------------------------------------------------------

    def _key(self, blob: bytes) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
        """The private key sealed in ``blob`` and its SPKI DER: from the cache, or unsealed (once) now."""
        cached = self._keys.get(blob)
        if cached is not None:
            self._keys.move_to_end(blob)
            return cached
        private_key = self._unseal(blob)
        entry = (private_key, _spki(private_key.public_key()))
        self._keys[bytes(blob)] = entry
        if len(self._keys) > KEY_CACHE_SIZE:
            self._keys.popitem(last=False)
        return entry

    def _unseal(self, blob: bytes) -> ec.EllipticCurvePrivateKey:
        """The private key in ``blob``, or a :class:`Refusal` that says why it cannot be unsealed here."""
        if len(blob) > MAX_SEALED:
            raise Refusal(ErrorCode.BAD_ARGUMENT, f"a sealed key is at most {MAX_SEALED} bytes")
        try:
            sealed = SealedData.parse(blob)
        except FormatError as exc:
            raise Refusal(ErrorCode.UNSEAL_CORRUPT, f"the sealed key is corrupt: not an sgx_sealed_data_t blob "
                          f"({exc})") from None
        if any(sealed.reserved1) or any(sealed.reserved2):
            # Not covered by the GCM tag in the SDK format; refuse them so that no tampering goes unnoticed.
            raise Refusal(ErrorCode.UNSEAL_CORRUPT, "the sealed key is corrupt: its reserved header bytes are not zero")
        request = sealed.key_request
        if request.key_name != KeyName.SEAL or request.key_policy not in _SEAL_POLICIES:
            raise self._diagnose(sealed, "its key request is not a SEAL request with an MRSIGNER or MRENCLAVE policy")
        if request.isv_svn > self._identity.isv_svn:
            raise Refusal(ErrorCode.UNSEAL_REFUSED, f"the sealed key was sealed by a newer enclave (ISVSVN "
                          f"{request.isv_svn}; this enclave has {self._identity.isv_svn})")
        try:
            key = self._runtime.get_key(request)
        except PlatformError as exc:
            raise self._diagnose(sealed, f"the platform refused its sealing key ({exc.message})") from None
        try:
            plaintext, aad = sealed.unseal(key)
        except VerificationError:
            raise self._diagnose(sealed, "its authentication tag does not verify") from None
        scalar = int.from_bytes(plaintext, "little")
        if len(plaintext) != _SCALAR or KeyDescriptor.parse(aad) is None or not 0 < scalar < _P256_ORDER:
            raise Refusal(ErrorCode.UNSEAL_CORRUPT, "the sealed blob unseals but does not hold an sgx-iot P-256 key")
        return ec.derive_private_key(scalar, ec.SECP256R1())

    def _diagnose(self, sealed: SealedData, symptom: str) -> Refusal:
        """Why ``sealed`` does not unseal, from its (cleartext) descriptor compared with this enclave."""
        me = self._identity
        descriptor = KeyDescriptor.parse(sealed.additional_mac_text)
        policy = sealed.key_request.key_policy
        if descriptor is None:
            return Refusal(ErrorCode.UNSEAL_CORRUPT, f"the sealed key is corrupt: {symptom}")
        if policy & KeyPolicy.MRSIGNER and descriptor.mrsigner != me.mrsigner:
            return Refusal(ErrorCode.UNSEAL_OTHER_SIGNER, "the sealed key belongs to an enclave signed by another "
                           f"key (MRSIGNER {descriptor.mrsigner.hex()}; this enclave's is {me.mrsigner.hex()})")
        if policy & KeyPolicy.MRENCLAVE and descriptor.mrenclave != me.mrenclave:
            return Refusal(ErrorCode.UNSEAL_OTHER_ENCLAVE, "the sealed key is bound to another enclave build "
                           f"(MRENCLAVE policy; sealed by {descriptor.mrenclave.hex()}, this enclave is "
                           f"{me.mrenclave.hex()})")
        mask = sealed.key_request.attribute_mask.flags
        sealer_flags = int.from_bytes(descriptor.attributes[:8], "little")
        if (sealer_flags ^ me.attributes.flags) & mask:
            return Refusal(ErrorCode.UNSEAL_OTHER_ENCLAVE, "the sealed key was sealed by this enclave launched "
                           f"with other attributes (flags {sealer_flags:#x}; now {me.attributes.flags:#x}; "
                           "debug and production launches cannot share keys)")
        if descriptor.mrsigner != me.mrsigner:
            # The platform tag is per signer: with another signer (MRENCLAVE policy) it cannot tell platforms apart.
            return Refusal(ErrorCode.UNSEAL_CORRUPT, f"the sealed key is corrupt or from another platform: {symptom}")
        if not hmac.compare_digest(descriptor.platform_tag, self._platform_tag()):
            return Refusal(ErrorCode.UNSEAL_OTHER_PLATFORM, "the sealed key was sealed on another platform (only "
                           "the machine that sealed a key can unseal it)")
        return Refusal(ErrorCode.UNSEAL_CORRUPT, f"the sealed key is corrupt: {symptom}")

    def _platform_tag(self) -> bytes:
        if self._platform_tag_value is None:
            request = seal_key_request(key_id=PLATFORM_TAG_KEY_ID, cpu_svn=self._identity.cpu_svn, isv_svn=0)
            key = self._runtime.get_key(request)
            self._platform_tag_value = hmac.new(key, b"platform tag", hashlib.sha256).digest()[:16]
        return self._platform_tag_value


def _arity(items: list[bytes], expected: int, op: str) -> None:
    if len(items) != expected:
        raise Refusal(ErrorCode.BAD_ARGUMENT, f"{op} takes {expected} items, not {len(items)}")


def _spki(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def main() -> int:
    """``python3 -m sgx_iot.enclave.program``: the entry point *inside Gramine* (``deploy/gramine``), where
    ``gramine-sgx`` has already measured and EINITed the enclave. Serves ECALLs on stdin/stdout with the
    :class:`~sgx_iot.platform.gramine.GramineRuntime`; the first frame is the IDENTITY response, or an error
    (``GRAMINE_UNAVAILABLE`` outside Gramine). On the simulated platform, :mod:`sgx_iot.enclave.loader` is the entry.
    """
    from sgx_iot.platform.gramine import GramineRuntime

    channel = stdio_channel()
    try:
        program = EnclaveProgram(GramineRuntime())
    except PlatformError as exc:
        try:
            channel.send(encode_error(exc.code, exc.message))
        except ChannelClosed:
            pass
        return 1
    program.run(channel)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
