"""Cost of MRENCLAVE replay, as ratios against hashlib SHA-256 over the same bytes, measured in the same run.

For the largest signed vectors (by enclave size and by file size): replay time per MiB of enclave and per EADD,
next to the time ``hashlib.sha256`` needs for exactly the bytes the replay feeds it (ECREATE/EADD/EEXTEND
records and page data). Then a synthetic 4 GiB heap (1,048,576 EADD-only pages) through the engine, with its
peak Python memory, to show that a large enclave is streamed, never allocated.

Needs the real vectors (``../shared/vectors`` or ``$SGX_IOT_VECTORS``). Runs in well under 30 seconds.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sgx_iot.sgx import measure, sdk_enclave
from sgx_iot.sgx.sdk_enclave import SdkEnclave, replay

MiB = 1 << 20


def _vectors() -> Path:
    env = os.environ.get("SGX_IOT_VECTORS")
    return Path(env) if env else Path(__file__).resolve().parent.parent.parent / "shared" / "vectors"


def _median_time(func: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class _CountingSha:
    """Stands in for hashlib.sha256 to count what the replay hashes (used in a separate, untimed run)."""

    def __init__(self) -> None:
        self.inner = hashlib.sha256()
        self.count = 0

    def update(self, data: Any) -> None:
        self.count += memoryview(data).nbytes
        self.inner.update(data)

    def digest(self) -> bytes:
        return self.inner.digest()


class _CountingMeasurement(measure.Measurement):
    last: _CountingMeasurement | None = None

    def __init__(self) -> None:
        super().__init__()
        self._sha = _CountingSha()  # type: ignore[assignment]
        _CountingMeasurement.last = self


def _hashed_bytes_and_eadds(metadata: Any, data: bytes) -> tuple[int, int]:
    original = sdk_enclave.Measurement
    sdk_enclave.Measurement = _CountingMeasurement  # type: ignore[misc]
    try:
        replay(metadata, data)
    finally:
        sdk_enclave.Measurement = original  # type: ignore[misc]
    m = _CountingMeasurement.last
    assert m is not None
    return m._sha.count, m.eadd_count  # type: ignore[attr-defined]


def bench_vector(path: Path) -> None:
    data = path.read_bytes()
    enclave = SdkEnclave.parse(data)
    metadata = enclave.metadata[0]
    hashed, eadds = _hashed_bytes_and_eadds(metadata, data)
    replay_s = _median_time(lambda: replay(metadata, data), 7)
    buffer = bytes(hashed)
    sha_s = _median_time(lambda: hashlib.sha256(buffer).digest(), 7)
    size_mib = metadata.enclave_size / MiB
    print(f"{path.name}: metadata {metadata.version_string}, enclave {size_mib:.0f} MiB, "
          f"file {len(data) / MiB:.2f} MiB")
    print(f"  {eadds} EADDs, {hashed / MiB:.2f} MiB hashed")
    print(f"  replay  {replay_s * 1e3:8.2f} ms  = {replay_s / size_mib * 1e6:8.2f} us/MiB of enclave, "
          f"{replay_s / eadds * 1e6:6.3f} us/EADD")
    print(f"  sha256  {sha_s * 1e3:8.2f} ms  = {sha_s / size_mib * 1e6:8.2f} us/MiB of enclave, "
          f"{sha_s / eadds * 1e6:6.3f} us/EADD  (same {hashed} bytes, one buffer)")
    print(f"  ratio replay / sha256 = {replay_s / sha_s:.2f}")


def bench_large_heap() -> None:
    pages = 1 << 20  # 4 GiB of heap, EADD only (what HEAP_MIN/HEAP_INIT entries produce)
    zero = bytes(4096)

    def run() -> None:
        m = measure.Measurement()
        m.ecreate(1, 1 << 33)
        m.add_pages(0, pages, 0x203, zero, extend=False)
        m.digest()

    run_s = _median_time(run, 3)
    tracemalloc.start()  # separate run: tracing slows allocation down
    run()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    buffer = bytes(64 * pages + 64)
    sha_s = _median_time(lambda: hashlib.sha256(buffer).digest(), 3)
    print(f"synthetic 4 GiB heap: {pages} EADD-only pages in {run_s * 1e3:.1f} ms "
          f"({run_s / pages * 1e9:.0f} ns/EADD, {run_s / 4096 * 1e6:.1f} us/MiB of enclave), "
          f"peak Python memory {peak / MiB:.1f} MiB")
    print(f"  sha256 over the same {len(buffer) / MiB:.0f} MiB: {sha_s * 1e3:.1f} ms; ratio {run_s / sha_s:.2f}")


def main() -> int:
    vectors = _vectors()
    if not (vectors / "README.md").is_file():
        print(f"real SGX vectors not found at {vectors}; set SGX_IOT_VECTORS", file=sys.stderr)
        return 2
    signed = sorted(vectors.glob("**/*.signed.so"))
    by_enclave = max(signed, key=lambda p: (SdkEnclave.parse(p.read_bytes()).metadata[0].enclave_size, p.name))
    by_file = max(signed, key=lambda p: p.stat().st_size)
    for path in dict.fromkeys([by_enclave, by_file]):
        bench_vector(path)
    bench_large_heap()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
