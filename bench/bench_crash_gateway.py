"""More kill -9 iterations than CI runs: tests/test_crash_gateway.py with a larger iteration count and time budget.

Each test kills the gateway (``gateway init``, ``gateway run``) at random instants and checks afterwards that the
state folder is usable and that the cloud holds every reading exactly once. Prints what the kills left (old or
new key after an interrupted ``init``; readings stored exactly once after interrupted ``run``s) and the wall time;
a soak, not a speed figure (exit 1 if any check failed).

Run: ``.venv/bin/python bench/bench_crash_gateway.py [--iterations 10] [--budget 6]`` (about 30 s by default;
``--iterations 200 --budget 300`` for a long soak).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=10, help="kills per test")
    parser.add_argument("--budget", type=float, default=6.0, help="seconds of kill loop per test")
    args = parser.parse_args()
    env = {**os.environ, "SGX_IOT_CRASH_ITERATIONS": str(args.iterations), "SGX_IOT_CRASH_BUDGET": str(args.budget)}
    started = time.monotonic()
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "tests/test_crash_gateway.py",
               "-k", "kill_9"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    for line in done.stdout.splitlines():
        if line.lstrip(".").startswith(("provisioning:", "signing/uploading:")) or " passed" in line or \
                " failed" in line:
            print(line.lstrip("."))
    print(f"wall time {elapsed:.1f} s for up to {args.iterations} kills per test")
    if done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-2000:], sep="\n")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
