"""Signing through the enclave boundary, as a ratio to in-process signing with ``cryptography`` in the same run.

For batches of 1, 16 and 256 readings (64 bytes each): signatures per second through the enclave boundary (frame,
pipe to the enclave process, unseal, ECDSA P-256 / SHA-256 DER, pipe back) divided by signatures per second of
``private_key.sign`` in this process, two ways:

* "one at a time": ``EnclaveClient.sign`` per batch, each ECALL answered before the next is sent (the latency of
  a single call, wake-up of the host process included);
* "streamed": ``EnclaveClient.sign_stream`` over the same batches, two ECALLs in flight (how ``gateway sign
  --stdin`` signs; docs/ecall-protocol.md, pipelining): the throughput of a gateway with readings queued.

Targets: ≥ 0.95 at batch 256, ≥ 0.80 at batch 16. A third row, "bare process", is the ceiling of any design with
the signing key in another process on this machine: a forked child signs the batch when it reads one byte and
answers one byte (no framing, no unsealing, no protocol). Rounds of all four are interleaved and the best round
of each kept, so that noise from other processes hits them alike.

Also: enclave launch time (process start, image build and measurement, EINIT, ready frame), PROVISION time, and
the latency of one SIGN of a blob the enclave has not unsealed yet (EGETKEY + AES-GCM + key set-up). The CPU-time
ratio (both processes' CPU, from ``/proc/PID/schedstat``) is printed too: it is what the wall-clock ratio tends to
on an otherwise idle machine, minus pipe latency. About 15 s.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot.enclave.host import EnclaveClient
from sgx_iot.enclave.image import build, installed_source_root
from sgx_iot.enclave.signing import sign_enclave
from sgx_iot.platform.sim.store import PlatformStore
from sgx_iot.sgx.sigstruct import generate_signing_key

BATCHES = (1, 16, 256)
TARGETS = {16: 0.80, 256: 0.95}
ROUNDS = 15
SIGNATURES_PER_ROUND = 2048
MESSAGE = b'{"sensor":"t1","seq":1234567,"temperature":21.52,"humidity":40.1}'[:64]


def timed(func: Callable[[], object], repeat: int) -> float:
    """Seconds for ``repeat`` calls of ``func``."""
    start = time.perf_counter()
    for _ in range(repeat):
        func()
    return time.perf_counter() - start


def cpu_seconds(pid: int | None) -> float:
    """CPU time of process ``pid`` so far, in seconds, from ``/proc/PID/schedstat`` (nanoseconds)."""
    with open(f"/proc/{pid}/schedstat") as handle:
        return int(handle.read().split()[0]) / 1e9


def median_seconds(func: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


class BareProcess:
    """A forked child that signs ``count`` messages with its own key each time it reads a count (4 bytes) and then
    writes one byte: the cost of two processes and two pipes, and nothing else."""

    def __init__(self, message: bytes) -> None:
        requests_in, self._requests = os.pipe()
        self._answers, answers_out = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: only os.* and its own key from here on, then os._exit
            os.close(self._requests)
            os.close(self._answers)
            key, algorithm = ec.generate_private_key(ec.SECP256R1()), ec.ECDSA(hashes.SHA256())
            while len(request := os.read(requests_in, 4)) == 4:
                for _ in range(int.from_bytes(request, "little")):
                    key.sign(message, algorithm)
                os.write(answers_out, b"!")
            os._exit(0)
        os.close(requests_in)
        os.close(answers_out)

    def sign(self, count: int) -> None:
        os.write(self._requests, count.to_bytes(4, "little"))
        os.read(self._answers, 1)

    def close(self) -> None:
        os.close(self._requests)
        os.close(self._answers)
        os.waitpid(self.pid, 0)


def main() -> int:
    folder = Path(tempfile.mkdtemp(prefix="bench-enclave-"))
    PlatformStore.init(folder / "platform")
    built = build(installed_source_root())
    sigstruct = folder / "enclave.sigstruct"
    sigstruct.write_bytes(sign_enclave(generate_signing_key(), built.source_root, enclave=built).to_bytes())

    def launch() -> None:
        with EnclaveClient(sigstruct, platform=folder / "platform"):
            pass

    launch()  # warm the interpreter's caches once
    launch_s = median_seconds(launch, 5)

    local_key = ec.generate_private_key(ec.SECP256R1())
    algorithm = ec.ECDSA(hashes.SHA256())
    results = []
    bare = BareProcess(MESSAGE)  # forked before the enclave process starts: the child holds no pipe of it
    with EnclaveClient(sigstruct, platform=folder / "platform") as client:
        provision_s = median_seconds(client.provision, 20)
        fresh = [client.provision().sealed for _ in range(20)]
        first_sign_s = statistics.median(timed(lambda blob=blob: client.sign(blob, [MESSAGE]), 1) for blob in fresh)
        sealed = client.provision().sealed
        for batch in BATCHES:
            messages = [MESSAGE] * batch
            calls = max(1, SIGNATURES_PER_ROUND // batch)

            def through_enclave(messages: list[bytes] = messages) -> None:
                client.sign(sealed, messages)

            def in_process(messages: list[bytes] = messages) -> None:
                for message in messages:
                    local_key.sign(message, algorithm)

            def streamed(messages: list[bytes] = messages, calls: int = calls) -> None:
                for _ in client.sign_stream(sealed, [messages] * calls):
                    pass

            def bare_process(batch: int = batch) -> None:
                bare.sign(batch)

            through_enclave(), streamed(), in_process(), bare_process()  # warm-up
            modes = (("one at a time", through_enclave, calls, client.pid), ("streamed", streamed, 1, client.pid),
                     ("bare process", bare_process, calls, bare.pid), ("in process", in_process, calls, None))
            best = {name: float("inf") for name, *_ in modes}
            cpu = dict.fromkeys(best, 0.0)
            for _ in range(ROUNDS):
                for name, func, repeat, child in modes:
                    cpu0, child0 = time.process_time(), cpu_seconds(child) if child else 0.0
                    best[name] = min(best[name], timed(func, repeat))
                    cpu[name] += time.process_time() - cpu0 + (cpu_seconds(child) - child0 if child else 0.0)
            signatures = calls * batch
            for name in ("one at a time", "streamed", "bare process"):
                results.append((batch, name, signatures / best[name], signatures / best["in process"],
                                cpu["in process"] / cpu[name]))

    print("enclave signing through the ECALL boundary vs in-process cryptography (same run, best of "
          f"{ROUNDS} interleaved rounds)")
    print(f"{'batch':>6} {'mode':<14} {'enclave sig/s':>14} {'in-process sig/s':>17} {'ratio':>7}  {'target':<14} "
          "cpu ratio")
    for batch, mode, enclave_rate, baseline_rate, cpu_ratio in results:
        ratio = enclave_rate / baseline_rate
        target = TARGETS.get(batch)
        verdict = "" if target is None or mode == "bare process" else \
            f"≥ {target:.2f} {'met' if ratio >= target else 'NOT met'}"
        print(f"{batch:>6} {mode:<14} {enclave_rate:>14.0f} {baseline_rate:>17.0f} {ratio:>7.3f}  {verdict:<14} "
              f"{cpu_ratio:.3f}")
    print("(ratio: wall-clock signatures/s; cpu ratio: in-process CPU time / host + enclave CPU time, which other "
          f"load on the machine does not distort; load average now {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs)")
    bare.close()
    print(f"enclave launch (process + image measurement + EINIT): {launch_s * 1000:.1f} ms (median of 5)")
    print(f"PROVISION (P-256 key + seal): {provision_s * 1000:.2f} ms (median of 20)")
    print(f"first SIGN of a blob not yet unsealed in the enclave: {first_sign_s * 1000:.2f} ms (median of 20)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
