"""Load on loopback at full size: 50 gateways register by attestation and upload 1000 readings each, in batches of
100, concurrently, against ``sgx-iot cloud serve`` (one worker, SQLite in a temporary folder).

Prints latency percentiles (p50/p95/p99) of registrations and reading batches, the throughput in readings stored
per second, and that throughput as a ratio to raw signature verification (``verify_reading`` on the same readings,
one thread, this process) measured in the same run. Then checks the database: exactly the rows sent (count and
content), no 5xx. Exit 1 if that check fails.

Run: ``.venv/bin/python bench/bench_load.py [--gateways 50] [--readings 1000] [--batch 100]`` (about 30 s at the
default size on 2 cores; the same code runs small in tests/test_load.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _cloud_helpers import make_world  # noqa: E402
from _load import presign, run_load  # noqa: E402

from sgx_iot.verify.readings import verify_reading  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateways", type=int, default=50)
    parser.add_argument("--readings", type=int, default=1000, help="per gateway")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        world = make_world(folder / "platform")
        t0 = time.perf_counter()
        signed = presign(world, args.gateways, args.readings)
        print(f"pre-signed {args.gateways * args.readings} readings in {time.perf_counter() - t0:.1f} s")

        sample = [sr for items in signed.values() for sr in items[:200]][:5000]
        keys = {name: world.key(name).public_key() for name in signed}
        t0 = time.perf_counter()
        for sr in sample:
            verify_reading(sr.reading, sr.signature, keys[sr.reading.gateway])
        baseline = len(sample) / (time.perf_counter() - t0)
        print(f"baseline: verify_reading {baseline:.0f} readings/s (one thread, no HTTP, no database)")

        report = run_load(folder / "run", world, signed, batch=args.batch, timeout=args.timeout)
        for line in report.lines():
            print(line)
        print(f"ratio to baseline: {report.throughput / baseline:.2f}")
        ok = (not report.errors and report.server_errors() == 0 and report.duplicate_rows == 0
              and report.held == report.expected and report.gateway_rows == args.gateways)
        for error in report.errors[:10]:
            print("error:", error)
        print("database check:", "exactly the expected rows" if ok else "MISMATCH")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
