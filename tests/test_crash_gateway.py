"""Kill -9 the gateway at random points, many times, with the real enclave and a real cloud.

* Provisioning: ``sgx-iot gateway init --force`` killed at instants spread over its whole duration. After every
  kill the state folder is usable: every file parses, the enclave unseals the sealed key (the old one or the new
  one, never a torn blob), the host's public key copy agrees with the enclave (repaired if needed); the gateway
  then registers and its readings are stored.
* Signing and uploading: ``sgx-iot gateway run --input FILE`` (a growing file) killed at random instants while it
  stores, signs and uploads, and restarted; the file keeps growing between runs. At the end every line of the file
  is stored in the cloud exactly once, under consecutive sequence numbers, signed by the gateway's key; nothing is
  left in the outbox or refused.

Bounded for CI (``SGX_IOT_CRASH_ITERATIONS``, default 8 kills per test, and a time budget); bench/
bench_crash_gateway.py runs more.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from _e2e_helpers import E2E, e2e, e2e_world  # noqa: F401  (fixtures)
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot.gateway.outbox import Outbox
from sgx_iot.gateway.session import GatewaySession
from sgx_iot.gateway.state import GatewayConfig, GatewayState
from sgx_iot.sgx.sealed import SealedData
from sgx_iot.sgx.sigstruct import Sigstruct
from sgx_iot.verify.readings import Reading

pytestmark = pytest.mark.slow

ITERATIONS = int(os.environ.get("SGX_IOT_CRASH_ITERATIONS", "8"))
BUDGET = float(os.environ.get("SGX_IOT_CRASH_BUDGET", "25"))  # seconds of kill loop per test


def fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    return hashlib.sha256(key.public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def check_state(state: GatewayState) -> ec.EllipticCurvePublicKey:
    """Every file of the state parses, and the enclave unseals the key; returns the enclave's public key."""
    Sigstruct.parse(state.sigstruct_path.read_bytes())
    SealedData.parse(state.sealed_key_path.read_bytes())
    GatewayConfig.from_json(state.config_path.read_bytes())
    with GatewaySession(state) as session:
        key = session.public_key()  # unseals in the enclave: a torn or mixed blob would be refused here
    assert state.public_key() == key  # the host copy agrees (the session repairs a stale one)
    assert state.config().sealed_key_sha256 == hashlib.sha256(state.sealed_key()).hexdigest()
    return key


def wait_and_kill(child: subprocess.Popen[bytes], delay: float) -> bool:
    """SIGKILL ``child`` after ``delay`` seconds unless it ended first; True if it was killed."""
    try:
        child.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        return True


def test_kill_9_during_provisioning_leaves_a_usable_state(e2e: E2E) -> None:  # noqa: F811
    state = e2e.gateway("gw-prov")
    key = check_state(state)
    init = ("gateway", "init", "--force", "--platform", str(e2e.world.platform), "--state", str(state.folder))

    # One complete run measures how long provisioning takes here; kills are spread over that duration.
    started = time.monotonic()
    done = e2e.process(state, *init)
    assert done.returncode == 0, done.stderr
    duration = time.monotonic() - started
    new = check_state(state)
    assert new != key
    key = new

    rng = random.Random(11)
    delays = [duration * (i + 0.5) / ITERATIONS for i in range(ITERATIONS)]
    rng.shuffle(delays)
    outcomes = {"old key": 0, "new key": 0}
    deadline = time.monotonic() + BUDGET
    for delay in delays:
        if time.monotonic() > deadline:
            break
        child = e2e.popen(state, *init, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_and_kill(child, delay)
        after = check_state(state)
        outcomes["old key" if after == key else "new key"] += 1
        key = after
    assert sum(outcomes.values()) >= min(3, ITERATIONS), outcomes

    # The gateway works with whichever key it has: it registers (the cloud re-keys it) and its readings are stored.
    registration = e2e.register(state, "gw-prov")
    assert registration.key_sha256 == fingerprint(key)
    sent = e2e.process(state, "gateway", "send", "--stdin", input=b"after-crash-1\nafter-crash-2\n")
    assert sent.returncode == 0, sent.stderr
    stored = e2e.cloud.readings("gw-prov")
    assert [r.payload for r in stored][-2:] == [b"after-crash-1", b"after-crash-2"]
    assert {r.key_sha256 for r in stored[-2:]} == {fingerprint(key)}
    leftovers = sorted(p.name for p in state.folder.iterdir() if p.name.endswith(".tmp"))
    print(f"provisioning: {outcomes}, duration {duration:.2f} s, leftover temporary files: {len(leftovers)}")


def test_kill_9_during_first_provisioning_then_init_succeeds(e2e: E2E, tmp_path: Path) -> None:  # noqa: F811
    """A gateway killed during its very first ``init`` is either provisioned or not at all; ``init`` then works."""
    rng = random.Random(5)
    for i in range(max(2, ITERATIONS // 3)):
        state = GatewayState(tmp_path / f"fresh-{i}")
        init = ("gateway", "init", "--platform", str(e2e.world.platform), "--sigstruct", str(e2e.world.sigstruct),
                "--state", str(state.folder))
        child = e2e.popen(state, *init, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_and_kill(child, rng.uniform(0.2, 1.5))
        if not state.is_provisioned():
            again = e2e.process(state, *init)
            assert again.returncode == 0, again.stderr
        check_state(state)


def test_kill_9_during_signing_and_uploading_loses_and_duplicates_nothing(
        e2e: E2E, tmp_path: Path) -> None:  # noqa: F811
    state = e2e.gateway("gw-run")
    key = check_state(state)
    source = tmp_path / "readings.log"
    source.write_bytes(b"")
    lines: list[bytes] = []

    def append(n: int) -> None:
        new = [b"reading-%06d temp=%d" % (len(lines) + i, (len(lines) + i) % 40) for i in range(n)]
        with source.open("ab") as handle:
            handle.write(b"".join(line + b"\n" for line in new))
        lines.extend(new)

    run = ("gateway", "run", "--input", str(source), "--batch", "25", "--flush-interval", "0.05",
           "--retry-delay", "0.05", "--retry-max-delay", "0.2")
    rng = random.Random(23)
    kills = 0
    deadline = time.monotonic() + BUDGET
    for _ in range(ITERATIONS):
        if time.monotonic() > deadline:
            break
        append(rng.randint(100, 400))
        child = e2e.popen(state, *run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kills += wait_and_kill(child, rng.uniform(0.3, 2.0))
        assert check_state(state) == key  # signing and uploading never change the key
        with sqlite3.connect(state.folder / "outbox.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert kills >= 1

    # A last run without a kill delivers whatever is left, then exits when idle.
    append(50)
    final = e2e.process(state, *run, "--idle-exit", "1.5", timeout=120)
    assert final.returncode == 0, final.stderr
    with Outbox.in_folder(state.folder) as outbox:
        stats = outbox.stats()
    assert (stats.pending, stats.unsigned, stats.dead_letters) == (0, 0, 0), stats

    stored = e2e.cloud.readings("gw-run")
    assert [r.payload for r in stored] == lines  # every line once, in order: nothing lost, nothing duplicated
    assert [r.seq for r in stored] == list(range(len(lines)))  # no sequence number skipped or reused
    assert {r.key_sha256 for r in stored} == {fingerprint(key)}
    for r in stored[:: max(1, len(stored) // 50)]:
        key.verify(r.signature, Reading("gw-run", r.seq, r.timestamp, r.payload).to_bytes(), ec.ECDSA(hashes.SHA256()))
    print(f"signing/uploading: {kills} kills, {len(lines)} readings stored exactly once")


def test_readings_pending_when_the_key_is_replaced_are_not_lost(e2e: E2E) -> None:  # noqa: F811
    """Readings signed, but not yet acknowledged, when the gateway is provisioned again (``init --force``, or an
    ``init`` that a kill interrupted after the new sealed key was written) must still reach the cloud once the new key
    is registered: the enclave can sign them again; they must not be refused under the new key and dead-lettered."""
    state = e2e.gateway("gw-rekey")
    e2e.cloud.stop()  # the cloud is unreachable: the readings are signed and wait in the outbox
    down = e2e.process(state, "gateway", "send", "--stdin", "--attempts", "1", "--retry-delay", "0",
                       input=b"before-rekey-1\nbefore-rekey-2\n")
    assert down.returncode == 2, down.stderr
    e2e.cloud.start()
    rekey = e2e.process(state, "gateway", "init", "--force", "--platform", str(e2e.world.platform))
    assert rekey.returncode == 0, rekey.stderr
    e2e.register(state, "gw-rekey")
    sent = e2e.process(state, "gateway", "send", "--stdin", input=b"after-rekey\n")
    with Outbox.in_folder(state.folder) as outbox:
        dead = [(d.reading.seq, d.code) for d in outbox.dead_letters()]
    assert dead == [], f"readings signed before the key changed were refused and dead-lettered: {dead}"
    assert sent.returncode == 0, sent.stdout
    assert [r.payload for r in e2e.cloud.readings("gw-rekey")] == [b"before-rekey-1", b"before-rekey-2", b"after-rekey"]
