"""Pipelined SIGN ECALLs (EnclaveClient.sign_stream, docs/ecall-protocol.md): every batch answered in order with
signatures that verify, two requests in flight and never more, frames too large for the pipe not pipelined, and
the channel kept in step when a stream stops early, fails, or is interrupted by another ECALL."""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from _enclave_helpers import installed_build, sigstruct_for
from sgx_iot.enclave.host import IN_FLIGHT, EnclaveClient, EnclaveError, _pipeline_limit
from sgx_iot.errors import UsageError
from sgx_iot.platform.sim.store import PlatformStore

ECDSA = ec.ECDSA(hashes.SHA256())


class Frames:
    """The order of requests and answers crossing the boundary: +1 per request sent, -1 per answer read."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, int]] = []  # (+1 | -1, op or status)

    def __call__(self, direction: str, data: bytes) -> None:
        kind = data[5] if len(data) > 5 else -1
        self.steps.append((1 if direction == "send" else -1, kind))

    def most_in_flight(self) -> int:
        depth = most = 0
        for step, _ in self.steps:
            depth += step
            most = max(most, depth)
        return most

    def clear(self) -> None:
        self.steps.clear()


@pytest.fixture(scope="module")
def frames() -> Frames:
    return Frames()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, frames: Frames) -> Iterator[EnclaveClient]:
    folder = tmp_path_factory.mktemp("stream")
    PlatformStore.init(folder / "platform")
    (folder / "enclave.sigstruct").write_bytes(sigstruct_for(installed_build()).to_bytes())
    with EnclaveClient(folder / "enclave.sigstruct", platform=folder / "platform", tap=frames) as c:
        yield c


@pytest.fixture(scope="module")
def sealed(client: EnclaveClient) -> bytes:
    return client.provision().sealed


def messages(batch: int, size: int = 40) -> list[bytes]:
    return [struct.pack(">II", batch, i) * (size // 8) for i in range(batch % 7 + 1)]


def assert_signed(result_key: ec.EllipticCurvePublicKey, batch: list[bytes], signatures: list[bytes]) -> None:
    assert len(signatures) == len(batch)
    for message, signature in zip(batch, signatures, strict=True):
        result_key.verify(signature, message, ECDSA)  # raises InvalidSignature otherwise


def test_every_batch_answered_in_order_with_two_requests_in_flight(client: EnclaveClient, sealed: bytes,
                                                                   frames: Frames) -> None:
    key = client.public_key(sealed)
    batches = [messages(b) for b in range(40)] + [[]]  # an empty batch is answered too (its key, no signatures)
    frames.clear()
    results = list(client.sign_stream(sealed, iter(batches)))
    assert len(results) == len(batches)
    for batch, result in zip(batches, results, strict=True):
        assert result.public_key == key
        assert_signed(key, batch, result.signatures)
    assert frames.most_in_flight() == IN_FLIGHT  # pipelined, and never deeper
    assert sum(1 for step, _ in frames.steps if step > 0) == len(batches)  # one ECALL per batch


def test_batches_are_read_lazily(client: EnclaveClient, sealed: bytes) -> None:
    """The stream asks for a batch only when it can send it: at most IN_FLIGHT batches ahead of the answers."""
    taken: list[int] = []

    def produce() -> Iterator[list[bytes]]:
        for b in range(10):
            taken.append(b)
            yield messages(b)

    stream = client.sign_stream(sealed, produce())
    next(stream)
    assert len(taken) <= IN_FLIGHT + 1
    assert len(list(stream)) == 9


def test_frames_too_large_for_the_pipe_are_not_pipelined(client: EnclaveClient, sealed: bytes,
                                                         frames: Frames) -> None:
    limit = client._pipeline_limit
    assert limit > 0
    big = [b"x" * 1000] * (limit // 1000 + 10)  # one frame larger than the limit
    batches = [messages(1), big, messages(2), big, big, messages(3)]
    frames.clear()
    results = list(client.sign_stream(sealed, batches))
    key = results[0].public_key
    for batch, result in zip(batches, results, strict=True):
        assert_signed(key, batch, result.signatures)
    sends = [i for i, (step, _) in enumerate(frames.steps) if step > 0]
    assert len(sends) == len(batches)  # one ECALL each
    unanswered = [sum(step for step, _ in frames.steps[:position]) for position in sends]
    # A large request goes only when nothing is unanswered; the small one after it is pipelined.
    assert unanswered == [0, 0, 1, 0, 0, 1]


def test_a_batch_longer_than_one_ecall_is_split_and_answered_whole(client: EnclaveClient, sealed: bytes) -> None:
    from sgx_iot.enclave.host import MAX_BATCH

    long = [b"%d" % i for i in range(MAX_BATCH + 5)]
    short = [b"after"]
    first, second = client.sign_stream(sealed, [long, short])
    assert_signed(first.public_key, long, first.signatures)
    assert_signed(second.public_key, short, second.signatures)


def test_stopping_early_leaves_the_channel_in_step(client: EnclaveClient, sealed: bytes) -> None:
    stream = client.sign_stream(sealed, (messages(b) for b in range(20)))
    first = next(stream)
    stream.close()  # an answer was asked for and not read: close() takes it
    after = client.sign(sealed, [b"next call"])
    assert_signed(first.public_key, [b"next call"], after.signatures)
    assert client.public_key(sealed) == first.public_key


def test_an_enclave_refusal_mid_stream_is_raised_and_the_channel_stays_in_step(client: EnclaveClient,
                                                                              sealed: bytes) -> None:
    corrupt = bytearray(sealed)
    corrupt[-1] ^= 1
    with pytest.raises(EnclaveError) as exc:
        list(client.sign_stream(bytes(corrupt), [messages(1), messages(2), messages(3)]))
    assert exc.value.code == "UNSEAL_CORRUPT"
    assert client.sign(sealed, [b"still in step"]).signatures


def test_another_ecall_from_inside_a_stream_is_refused(client: EnclaveClient, sealed: bytes) -> None:
    stream = client.sign_stream(sealed, [messages(1), messages(2), messages(3)])
    next(stream)
    with pytest.raises(UsageError, match="stream"):
        client.sign(sealed, [b"interleaved"])
    assert len(list(stream)) == 2
    assert client.sign(sealed, [b"after the stream"]).signatures


def test_another_thread_waits_for_the_stream(client: EnclaveClient, sealed: bytes) -> None:
    stream = client.sign_stream(sealed, [messages(b) for b in range(6)])
    next(stream)
    done: list[int] = []
    other = threading.Thread(target=lambda: done.append(len(client.sign(sealed, [b"from another thread"]).signatures)))
    other.start()
    other.join(timeout=0.3)
    assert other.is_alive() and not done  # waiting for the stream to finish
    assert len(list(stream)) == 5
    other.join(timeout=30)
    assert done == [1]


def test_sign_digests_and_sign_still_make_one_answer(client: EnclaveClient, sealed: bytes) -> None:
    import hashlib

    digests = [hashlib.sha256(b"file %d" % i).digest() for i in range(3)]
    result = client.sign_digests(sealed, digests)
    for i, signature in enumerate(result.signatures):
        result.public_key.verify(signature, b"file %d" % i, ECDSA)
    empty = client.sign(sealed, [])
    assert empty.signatures == [] and empty.public_key == result.public_key


def test_a_stream_closed_by_another_thread_releases_the_enclave(client: EnclaveClient, sealed: bytes) -> None:
    stream = client.sign_stream(sealed, [messages(b) for b in range(6)])
    next(stream)
    closer = threading.Thread(target=stream.close)
    closer.start()
    closer.join(timeout=30)
    done: list[int] = []
    other = threading.Thread(target=lambda: done.append(len(client.sign(sealed, [b"after"]).signatures)))
    other.start()
    other.join(timeout=30)
    assert done == [1]
    assert_signed(client.public_key(sealed), [b"here too"], client.sign(sealed, [b"here too"]).signatures)


def test_when_the_input_fails_the_signatures_already_made_come_first(client: EnclaveClient, sealed: bytes) -> None:
    def batches() -> Iterator[list[bytes]]:
        yield messages(1)
        yield messages(2)
        raise OSError("the input went away")

    got: list[int] = []
    with pytest.raises(OSError, match="went away"):
        for result in client.sign_stream(sealed, batches()):
            got.append(len(result.signatures))
    assert got == [len(messages(1)), len(messages(2))]
    too_big = [b"x" * (client._pipeline_limit + 1), b"y" * (16 * 1024 * 1024)]  # the second fits no ECALL
    got.clear()
    with pytest.raises(UsageError, match="digest"):
        for result in client.sign_stream(sealed, [messages(3), too_big]):
            got.append(len(result.signatures))
    assert got == [len(messages(3))]


def test_an_ecall_interrupted_while_it_waits_leaves_the_next_one_correct(client: EnclaveClient,
                                                                         sealed: bytes) -> None:
    """An exception raised in the host while it waits for an answer (here from a signal handler, as Ctrl-C
    does) leaves that answer owed: the next ECALL reads and drops it, and gets its own answer."""
    import signal

    class Interrupted(Exception):
        pass

    def interrupt(*_: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.02)
        with pytest.raises(Interrupted):
            client.sign(sealed, [b"%d" % i for i in range(4000)])  # about 0.1 s of signing: the read is waiting
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    after = client.sign(sealed, [b"after the interruption"])
    assert_signed(client.public_key(sealed), [b"after the interruption"], after.signatures)


def test_pipeline_limit_is_zero_when_the_capacity_is_unknown(tmp_path: Path) -> None:
    with open(tmp_path / "not-a-pipe", "wb") as handle:
        assert _pipeline_limit(handle.fileno()) == 0
