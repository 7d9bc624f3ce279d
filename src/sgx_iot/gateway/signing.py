"""``gateway sign``: detached signatures of files, and of lines read from a stream, made in the enclave.

Signatures are ECDSA P-256 / SHA-256 in DER, as ``openssl dgst -sha256 -sign`` writes them:
``openssl dgst -sha256 -verify public_key.pem -signature FILE.sig FILE`` accepts them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot._fs import atomic_write, open_for_reading
from sgx_iot.enclave.host import MAX_BATCH
from sgx_iot.errors import UsageError
from sgx_iot.gateway.session import GatewaySession

SIGNATURE_SUFFIX = ".sig"
LINES_PER_ECALL = 256
"""Default lines per SIGN ECALL of ``gateway sign --stdin``: through a pipelined stream, batches of 256 sign at
0.99–1.2 times the in-process rate (bench/bench_enclave_sign.py), and signatures come out every 256 lines."""
_READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class SignedFiles:
    """The signature files written, and the key that verifies them (its PEM is the state's ``public_key.pem``)."""

    signatures: list[Path]
    public_key: ec.EllipticCurvePublicKey
    public_key_path: Path


@contextmanager
def open_input(path: Path) -> Iterator[BinaryIO]:
    """``path`` opened for reading; ``UsageError`` saying what is wrong when it cannot be opened or read."""
    with open_for_reading(path) as handle:
        yield handle


def file_digest(path: Path) -> bytes:
    """SHA-256 of a file's bytes, read in chunks (``UsageError`` when it cannot be read)."""
    digest = hashlib.sha256()
    with open_input(path) as handle:
        while chunk := handle.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.digest()


def sign_files(session: GatewaySession, paths: Iterable[Path]) -> SignedFiles:
    """Sign every file in one batch (the host hashes, the enclave signs the digests) and write ``FILE.sig``."""
    files = [Path(p) for p in paths]
    if not files:
        raise UsageError("name at least one file to sign, or use --stdin")
    digests = [file_digest(path) for path in files]
    result = session.sign_digests(digests)
    outputs = []
    for path, signature in zip(files, result.signatures, strict=True):
        target = path.with_name(path.name + SIGNATURE_SUFFIX)
        atomic_write(target, signature, mode=0o644)
        outputs.append(target)
    return SignedFiles(outputs, result.public_key, session.state.public_key_path)


def sign_lines(session: GatewaySession, lines: Iterable[bytes], *, batch: int = LINES_PER_ECALL
               ) -> Iterator[list[bytes]]:  # fmt: skip
    """DER signatures of the input lines, in order, a list per ECALL of up to ``batch`` lines. A line is signed
    without its ``\\n`` terminator. The batches go to the enclave as a pipelined stream (two ECALLs in flight), so
    small batches cost little more than large ones; a batch's signatures come once the next batch has been read
    (or the input has ended)."""
    if not 1 <= batch <= MAX_BATCH:
        raise UsageError(f"the batch size must be between 1 and {MAX_BATCH} lines, not {batch}")

    def batches() -> Iterator[list[bytes]]:
        pending: list[bytes] = []
        for line in lines:
            pending.append(line[:-1] if line.endswith(b"\n") else line)
            if len(pending) >= batch:
                yield pending
                pending = []
        if pending:
            yield pending

    with closing(session.sign_stream(batches())) as results:
        for result in results:
            yield result.signatures
