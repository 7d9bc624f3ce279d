"""Host side of the enclave boundary: start the enclave process and make ECALLs (``docs/ecall-protocol.md``).

:class:`EnclaveClient` is a context manager: entering it starts ``python -m sgx_iot.enclave.loader`` (which EINITs
the image built from the same source tree and serves ECALLs on its stdin/stdout); leaving it closes the channel
and waits for the process. Every refusal by the enclave or the platform arrives as :class:`EnclaveError` (a
:class:`~sgx_iot.errors.PlatformError`) with the enclave's stable code (``EINIT_MRENCLAVE_MISMATCH``,
``UNSEAL_OTHER_PLATFORM``, …) and its sentence. The host only ever handles sealed blobs, public keys, reports,
quotes and signatures: private keys stay in the enclave process.
"""

from __future__ import annotations

import enum
import io
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot.enclave.image import installed_source_root
from sgx_iot.enclave.loader import LAUNCH_USAGE
from sgx_iot.enclave.protocol import (
    MAX_FRAME,
    READ_BUFFER,
    STATUS_ERROR,
    STATUS_OK,
    Channel,
    ChannelClosed,
    Op,
    Tap,
    decode_body,
    decode_error,
    decode_identity,
    encode_body,
)
from sgx_iot.errors import FormatError, PlatformError, UsageError
from sgx_iot.platform.base import EnclaveIdentity
from sgx_iot.sgx.attributes import Attributes
from sgx_iot.sgx.keyrequest import KeyPolicy
from sgx_iot.sgx.report import Report

MAX_BATCH = 4096
"""Most messages per SIGN ECALL; :meth:`EnclaveClient.sign` splits longer batches (one unseal per ECALL)."""
_STOP_TIMEOUT = 10.0


class EnclaveError(PlatformError):
    """The enclave (or the platform under it) refused an ECALL or the launch; ``code`` is the enclave's."""


class SealPolicy(enum.StrEnum):
    """Which identity a sealed key is bound to (``sgx_seal_data`` uses MRSIGNER)."""

    MRSIGNER = "mrsigner"
    MRENCLAVE = "mrenclave"

    @property
    def key_policy(self) -> int:
        """The KEYPOLICY bit."""
        return int(KeyPolicy.MRSIGNER if self is SealPolicy.MRSIGNER else KeyPolicy.MRENCLAVE)


@dataclass(frozen=True)
class Provisioned:
    """Result of PROVISION: the ``sgx_sealed_data_t`` blob and the public key of the sealed private key."""

    sealed: bytes
    public_key: ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class Attestation:
    """Result of ATTEST: the key the enclave derived, its REPORT, and the quote (empty for a non-QE target)."""

    public_key: ec.EllipticCurvePublicKey
    report: Report
    quote: bytes


@dataclass(frozen=True)
class Signatures:
    """Result of SIGN: the signing public key and one DER signature per message, in order."""

    public_key: ec.EllipticCurvePublicKey
    signatures: list[bytes]


class EnclaveClient:
    """A running enclave process and its ECALL channel.

    ``sigstruct`` is the enclave's SIGSTRUCT file; ``platform`` the simulated platform folder (None: its default);
    ``source_root`` the tree the enclave runs from (default: the one this interpreter imports ``sgx_iot`` from);
    ``tap`` observes every frame crossing the boundary (tests use it); ``create_platform`` lets the loader
    initialise a simulated platform folder that does not exist yet. ``command`` replaces the whole enclave command
    line (e.g. ``["gramine-sgx", "sgx-iot-enclave"]`` on real SGX, see ``deploy/gramine``); the other launch
    arguments are then unused, and the process must speak the protocol on stdin/stdout from its first frame.
    """

    def __init__(
        self,
        sigstruct: Path,
        *,
        platform: Path | None = None,
        debug: bool = False,
        source_root: Path | None = None,
        tap: Tap | None = None,
        python: str = sys.executable,
        create_platform: bool = True,
        command: Sequence[str] | None = None,
    ) -> None:
        self._sigstruct = Path(sigstruct)
        self._platform = Path(platform) if platform is not None else None
        self._debug = debug
        self._source_root = Path(source_root) if source_root is not None else installed_source_root()
        self._tap = tap
        self._python = python
        self._create_platform = create_platform
        self._command = list(command) if command is not None else None
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._reader: IO[bytes] | None = None
        self._channel: Channel | None = None
        self._lock = threading.Lock()
        self._last_key: tuple[bytes, ec.EllipticCurvePublicKey] | None = None
        self.identity: EnclaveIdentity | None = None
        self.platform_kind = ""

    # --- lifecycle -----------------------------------------------------------------------------------------

    def __enter__(self) -> EnclaveClient:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()

    def start(self) -> None:
        """Start the enclave process and wait until it is launched (or raise why it could not be)."""
        if self._command is not None:
            command = self._command
        else:
            if not self._sigstruct.is_file():
                raise UsageError(f"the SIGSTRUCT {self._sigstruct} does not exist; create it with `sgx-iot enclave "
                                 "sign`")
            command = [self._python, "-P", "-m", "sgx_iot.enclave.loader", "--sigstruct",
                       str(self._sigstruct.resolve())]  # fmt: skip
            if self._platform is not None:
                command += ["--platform", str(self._platform.expanduser().resolve())]
            if self._debug:
                command.append("--debug")
            if not self._create_platform:
                command.append("--no-create")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self._source_root), env.get("PYTHONPATH")) if p)
        self._stderr = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env, bufsize=0,
            cwd=str(self._source_root) if self._command is None else None,
        )  # fmt: skip
        assert self._process.stdin is not None and self._process.stdout is not None
        self._reader = io.BufferedReader(self._process.stdout, buffer_size=READ_BUFFER)  # type: ignore[arg-type]
        self._channel = Channel(self._reader, self._process.stdin, tap=self._tap)
        try:
            items = self._receive()
            fields = decode_identity(items[0]) if len(items) == 2 else None
            if fields is None:
                raise FormatError("EcallResponse", "items", None, "the ready message is not an identity")
        except BaseException:
            self.close()
            raise
        fields["attributes"] = Attributes.parse(fields["attributes"])  # type: ignore[arg-type]
        self.identity = EnclaveIdentity(**fields)  # type: ignore[arg-type]
        self.platform_kind = items[1].decode("ascii", "replace")

    def close(self) -> None:
        """Close the channel and wait for the enclave process to exit (kill it if it does not)."""
        process, self._process = self._process, None
        if process is not None:
            for stream in (process.stdin, self._reader):
                try:
                    if stream is not None:
                        stream.close()
                except OSError:
                    pass
            try:
                process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        self._channel = None

    @property
    def pid(self) -> int | None:
        """The enclave process id while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def channel(self) -> Channel:
        """The raw ECALL channel (for tests that send malformed frames)."""
        if self._channel is None:
            raise UsageError("the enclave is not running")
        return self._channel

    # --- ECALLs --------------------------------------------------------------------------------------------

    def call(self, op: int, items: Sequence[bytes]) -> list[bytes]:
        """One ECALL; the result items, or :class:`EnclaveError` with the enclave's code."""
        try:
            body = encode_body(op, items)
        except ValueError as exc:
            raise UsageError(f"the request is too large for one ECALL: {exc}") from None
        with self._lock:
            try:
                self.channel.send(body)
            except ChannelClosed:
                raise self._exited() from None
            return self._receive()

    def provision(self, policy: SealPolicy = SealPolicy.MRSIGNER) -> Provisioned:
        """PROVISION: a new P-256 key, sealed under ``policy``."""
        items = self.call(Op.PROVISION, [policy.key_policy.to_bytes(2, "little")])
        _expect(items, 2, "PROVISION")
        return Provisioned(items[0], _public_key(items[1]))

    def public_key(self, sealed: bytes) -> ec.EllipticCurvePublicKey:
        """PUBLIC_KEY: the public key the enclave derives from the sealed private key."""
        items = self.call(Op.PUBLIC_KEY, [sealed])
        _expect(items, 1, "PUBLIC_KEY")
        return _public_key(items[0])

    def attest(self, sealed: bytes, nonce: bytes, target_info: bytes | None = None) -> Attestation:
        """ATTEST: a REPORT binding the sealed key and ``nonce`` (and its quote when no target is given)."""
        items = self.call(Op.ATTEST, [sealed, nonce, target_info or b""])
        _expect(items, 3, "ATTEST")
        return Attestation(_public_key(items[0]), Report.parse(items[1]), items[2])

    def sign(self, sealed: bytes, messages: Sequence[bytes]) -> Signatures:
        """SIGN: ECDSA P-256/SHA-256 DER signatures of ``messages`` (split into ECALLs of at most
        :data:`MAX_BATCH` messages / :data:`~sgx_iot.enclave.protocol.MAX_FRAME` bytes)."""
        return self._sign(Op.SIGN, sealed, messages)

    def sign_digests(self, sealed: bytes, digests: Sequence[bytes]) -> Signatures:
        """SIGN_DIGESTS: signatures of data whose SHA-256 ``digests`` the host computed (same signatures as
        :meth:`sign` over the data; used for large files)."""
        return self._sign(Op.SIGN_DIGESTS, sealed, digests)

    # --- internals -----------------------------------------------------------------------------------------

    def _sign(self, op: Op, sealed: bytes, messages: Sequence[bytes]) -> Signatures:
        public_key: ec.EllipticCurvePublicKey | None = None
        signatures: list[bytes] = []
        for chunk in _batches(messages, budget=MAX_FRAME - len(sealed) - 64):
            items = self.call(op, [sealed, *chunk])
            _expect(items, len(chunk) + 1, op.name)
            key = self._cached_public_key(items[0])
            if public_key is not None and key != public_key:
                raise FormatError("EcallResponse", "public_key", None, "the enclave changed key within one batch")
            public_key = key
            signatures.extend(items[1:])
        if public_key is None:
            public_key = self.public_key(sealed)
        return Signatures(public_key, signatures)

    def _cached_public_key(self, spki: bytes) -> ec.EllipticCurvePublicKey:
        if self._last_key is None or self._last_key[0] != spki:
            self._last_key = (spki, _public_key(spki))
        return self._last_key[1]

    def _receive(self) -> list[bytes]:
        try:
            body = self.channel.receive()
        except ChannelClosed:
            raise self._exited() from None
        message = decode_body(body, "EcallResponse")
        if message.kind == STATUS_ERROR:
            code, text = decode_error(message.items)
            if code == LAUNCH_USAGE:
                raise UsageError(text)
            raise EnclaveError(code, text)
        if message.kind != STATUS_OK:
            raise FormatError("EcallResponse", "kind", 1, f"unknown status {message.kind}")
        return message.items

    def _exited(self) -> EnclaveError:
        process = self._process
        code = process.poll() if process is not None else None
        if process is not None and code is None:
            try:
                code = process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                code = None
        detail = self._stderr_tail()
        return EnclaveError("ENCLAVE_EXITED", f"the enclave process stopped unexpectedly (exit code {code})"
                            + (f": {detail}" if detail else ""))

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        lines = [line.strip() for line in self._stderr.read()[-4096:].decode("utf-8", "replace").splitlines()]
        lines = [line for line in lines if line]
        return lines[-1] if lines else ""


def _batches(messages: Sequence[bytes], *, budget: int) -> Iterator[list[bytes]]:
    if len(messages) <= MAX_BATCH and sum(map(len, messages)) + 4 * len(messages) <= budget:
        if messages:
            yield list(messages)
        return
    chunk: list[bytes] = []
    size = 0
    for message in messages:
        cost = len(message) + 4
        if cost > budget:
            raise UsageError(f"a {len(message)}-byte message is larger than one ECALL may carry ({budget} bytes); "
                             "sign its SHA-256 digest instead")
        if chunk and (len(chunk) >= MAX_BATCH or size + cost > budget):
            yield chunk
            chunk, size = [], 0
        chunk.append(message)
        size += cost
    if chunk:
        yield chunk


def _expect(items: list[bytes], count: int, op: str) -> None:
    if len(items) != count:
        raise FormatError("EcallResponse", "items", None, f"{op} returned {len(items)} items, expected {count}")


def _public_key(spki: bytes) -> ec.EllipticCurvePublicKey:
    try:
        key: Any = serialization.load_der_public_key(spki)
    except ValueError:
        raise FormatError("EcallResponse", "public_key", None, "not a DER SubjectPublicKeyInfo") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise FormatError("EcallResponse", "public_key", None, "not a P-256 public key")
    return key
