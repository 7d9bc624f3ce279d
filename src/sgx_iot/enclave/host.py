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
import fcntl
import os
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
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
PIPE_SIZE = 1024 * 1024
"""Size asked of the kernel for the pipe to the enclave (Linux' default largest: ``/proc/sys/fs/pipe-max-size``)."""
IN_FLIGHT = 2
"""ECALLs a stream (:meth:`EnclaveClient.sign_stream`) keeps in flight: the enclave signs one batch while the host
reads the answer to the previous one."""
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
        self._lock = threading.Lock()  # not an RLock: a stream may be closed by another thread than its own
        self._stream_owner: int | None = None  # the thread whose sign_stream is open
        self._owed = 0  # answers the enclave owes for requests sent; read (and dropped) before the next request
        self._pipeline_limit = 0
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
        self._pipeline_limit = _pipeline_limit(self._process.stdin.fileno())
        self._reader = self._process.stdout  # unbuffered: the Channel buffers
        self._channel = Channel(self._reader, self._process.stdin, tap=self._tap)
        self._owed = 1  # the ready frame: the answer to an implicit IDENTITY request
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
        body = _encode(op, items)
        self._refuse_during_stream()
        with self._lock:
            self._settle()
            self._send(body)
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

    def sign_stream(self, sealed: bytes, batches: Iterable[Sequence[bytes]]) -> Iterator[Signatures]:
        """SIGN each of ``batches`` (read lazily) and yield its :class:`Signatures`, in order, as :meth:`sign`
        would, but with the next batch's ECALL sent before the previous answer is read: the enclave signs one
        batch while the host takes the answer to the last one, so a stream of small batches is not slowed by a
        process wake-up per ECALL (``docs/ecall-protocol.md``, pipelining).

        Use it under ``contextlib.closing`` (or exhaust it): while it is open no other ECALL of this client runs
        (another thread's waits; this thread's raises ``UsageError``), and an iterator merely dropped stays open as
        long as something refers to it (a traceback being handled does). Answers asked for and not taken when
        it closes are read and dropped before the next ECALL. When ``batches`` raises, the signatures already
        made are yielded first.
        """
        return self._merged(Op.SIGN, sealed, batches)

    # --- internals -----------------------------------------------------------------------------------------

    def _sign(self, op: Op, sealed: bytes, messages: Sequence[bytes]) -> Signatures:
        if _fits_one_ecall(messages, budget=_budget(sealed)):
            items = self.call(op, [sealed, *messages])  # the common case, without the stream's machinery
            _expect(items, len(messages) + 1, op.name)
            return Signatures(self._cached_public_key(items[0]), items[1:])
        [result] = self._merged(op, sealed, [messages])
        return result

    def _merged(self, op: Op, sealed: bytes, batches: Iterable[Sequence[bytes]]) -> Iterator[Signatures]:
        """One :class:`Signatures` per batch: the answers of the ECALLs of :meth:`_stream` put back together."""
        merged: Signatures | None = None
        with closing(self._stream(op, sealed, batches)) as results:  # closed here, not whenever GC runs
            for result, last in results:
                if merged is None:
                    merged = result
                else:
                    merged.signatures.extend(_same_key(merged, result).signatures)
                if last:
                    yield merged
                    merged = None

    def _stream(self, op: Op, sealed: bytes, batches: Iterable[Sequence[bytes]]) -> Iterator[tuple[Signatures, bool]]:
        """The answer to every ECALL the batches are split into, in order, each with True if it is its batch's
        last (an empty batch is one ECALL too: it answers the key). The request for one ECALL is sent before the
        answer to the previous one is read, so at most :data:`IN_FLIGHT` are unanswered at any time; the answer to
        a batch comes once the next batch has been read.

        Why this cannot deadlock: a request is sent while another is unanswered only if its frame fits in the
        pipe with room to spare (:func:`_pipeline_limit`), and at most one is unanswered then; the enclave has
        read all of that one before it writes its answer, so the host's write completes and it goes on to read.
        """
        self._refuse_during_stream()
        budget = _budget(sealed)
        with self._lock:
            self._stream_owner = threading.get_ident()
            try:
                self._settle()
                in_flight: deque[tuple[int, bool]] = deque()  # (messages, last of its batch) of unanswered requests
                batches = iter(batches)
                while True:
                    try:
                        batch = next(batches, None)
                        chunks = None if batch is None else (list(_batches(batch, budget=budget)) or [[]])
                    except Exception:
                        while in_flight:  # hand over what was signed before the input failed
                            yield self._signatures(op, *in_flight.popleft())
                        raise
                    if chunks is None:
                        break
                    for number, chunk in enumerate(chunks, 1):
                        body = _encode(op, [sealed, *chunk])
                        if len(body) + 4 > self._pipeline_limit:
                            while in_flight:
                                yield self._signatures(op, *in_flight.popleft())
                        self._send(body)
                        in_flight.append((len(chunk), number == len(chunks)))
                        while len(in_flight) >= IN_FLIGHT:
                            yield self._signatures(op, *in_flight.popleft())
                while in_flight:
                    yield self._signatures(op, *in_flight.popleft())
            finally:
                self._stream_owner = None

    def _signatures(self, op: Op, count: int, last: bool) -> tuple[Signatures, bool]:
        items = self._receive()
        _expect(items, count + 1, op.name)
        return Signatures(self._cached_public_key(items[0]), items[1:]), last

    def _send(self, body: bytes) -> None:
        try:
            self.channel.send(body)
        except ChannelClosed:
            raise self._exited() from None
        except BaseException:
            # Interrupted (KeyboardInterrupt, …) perhaps halfway through the frame: the enclave would read the
            # next request from the middle of this one. Stop it; the next ECALL then says it has exited.
            if self._process is not None:
                self._process.kill()
            raise
        self._owed += 1

    def _settle(self) -> None:
        """Read and drop the answers still owed (a stream closed early, an ECALL interrupted while it waited)."""
        while self._owed:
            try:
                self.channel.receive()
            except ChannelClosed:
                raise self._exited() from None
            except FormatError:
                pass  # an oversized frame, skipped: it was an answer all the same
            self._owed -= 1

    def _refuse_during_stream(self) -> None:
        if self._stream_owner == threading.get_ident():
            raise UsageError("an ECALL stream of this enclave is still open in this thread; exhaust or close it "
                             "before making another ECALL")

    def _cached_public_key(self, spki: bytes) -> ec.EllipticCurvePublicKey:
        if self._last_key is None or self._last_key[0] != spki:
            self._last_key = (spki, _public_key(spki))
        return self._last_key[1]

    def _receive(self) -> list[bytes]:
        """The items of the next answer (one answer owed less), or the enclave's refusal as an exception."""
        try:
            body = self.channel.receive()
        except ChannelClosed:
            raise self._exited() from None
        except FormatError:  # an oversized answer, skipped
            self._owed -= 1
            raise
        self._owed -= 1
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


def _encode(op: int, items: Sequence[bytes]) -> bytes:
    try:
        return encode_body(op, items)
    except ValueError as exc:
        raise UsageError(f"the request is too large for one ECALL: {exc}") from None


def _pipeline_limit(requests: int) -> int:
    """Largest frame that may be sent while another request is unanswered: the capacity of the pipe of
    ``requests`` (enlarged to :data:`PIPE_SIZE` when the kernel allows) less one page, which the enclave may hold
    half-read; 0 (never pipeline) when the capacity cannot be known."""
    try:
        fcntl.fcntl(requests, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except (OSError, AttributeError):
        pass  # over the kernel's limit for this user, or not a pipe: keep the size it has
    try:
        capacity = fcntl.fcntl(requests, fcntl.F_GETPIPE_SZ)
    except (OSError, AttributeError):
        return 0
    return max(0, capacity - 4096)


def _budget(sealed: bytes) -> int:
    """Bytes of messages one SIGN ECALL with the key ``sealed`` may carry (their 4-byte sizes included)."""
    return MAX_FRAME - len(sealed) - 64


def _fits_one_ecall(messages: Sequence[bytes], *, budget: int) -> bool:
    return len(messages) <= MAX_BATCH and sum(map(len, messages)) + 4 * len(messages) <= budget


def _batches(messages: Sequence[bytes], *, budget: int) -> Iterator[list[bytes]]:
    """``messages`` in chunks of one ECALL each (``UsageError`` for a message too large for any)."""
    if _fits_one_ecall(messages, budget=budget):
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


def _same_key(first: Signatures, then: Signatures) -> Signatures:
    """``then``, after checking that the enclave signed it with ``first``'s key (one batch, one key)."""
    if then.public_key != first.public_key:
        raise FormatError("EcallResponse", "public_key", None, "the enclave changed key within one batch")
    return then


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
