"""Store-and-forward: `gateway send` / `gateway run` through a real cloud on loopback and the real enclave process.

Nothing lost, nothing duplicated: crashes are simulated by reopening the outbox file and by killing a real
`gateway send` process with SIGKILL; the cloud goes down and comes back on the same port.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from _e2e_helpers import E2E, CloudServer, e2e, e2e_world, json_lines, payloads  # noqa: F401  (fixtures)
from sgx_iot.enclave.protocol import Op
from sgx_iot.errors import UsageError
from sgx_iot.gateway.cloud_client import CloudClient, RetryPolicy
from sgx_iot.gateway.delivery import Delivery, DeliveryReport
from sgx_iot.gateway.runner import RunOptions, run
from sgx_iot.gateway.inputs import open_source
from sgx_iot.gateway.outbox import OUTBOX_FILE, Outbox
from sgx_iot.gateway.provisioning import init_gateway
from sgx_iot.gateway.registration import key_fingerprint, require_registration
from sgx_iot.gateway.session import GatewaySession
from sgx_iot.gateway.state import GatewayState
from sgx_iot.gateway.status import gateway_status
from sgx_iot.verify.readings import Reading, verify_reading

FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)


@contextmanager
def delivery_for(state: GatewayState, url: str | None = None, *, batch: int = 100, retry: RetryPolicy = FAST,
                 tap: object = None) -> Iterator[Delivery]:  # fmt: skip
    """A Delivery on the gateway's outbox, enclave and registered cloud (``url`` overrides the cloud)."""
    registration = require_registration(state)
    with Outbox.in_folder(state.folder) as outbox, CloudClient(url or registration.cloud, retry=retry) as client, \
            GatewaySession(state, tap=tap) as session:  # type: ignore[arg-type]
        yield Delivery(outbox, session, client, registration.name, key_sha256=registration.key_sha256, batch=batch)


def cloud_payloads(e2e: E2E, name: str) -> list[bytes]:
    return [r.payload for r in e2e.cloud.readings(name)]


def test_send_signs_in_batches_and_the_cloud_stores_verified_readings(e2e: E2E) -> None:
    state = e2e.gateway("gw-send")
    ecalls: list[int] = []
    unanswered = [1, 0]  # now (the enclave's ready frame answers an implicit request), most

    def tap(direction: str, frame: bytes) -> None:
        if direction == "send":
            ecalls.append(frame[5])
        unanswered[0] += 1 if direction == "send" else -1
        unanswered[1] = max(unanswered)

    sent = payloads(250)
    with delivery_for(state, batch=100, tap=tap) as delivery:
        report = delivery.send(sent)
    assert (report.stored, report.duplicates, report.refused, report.pending, report.error) == (250, 0, 0, 0, None)
    assert ecalls.count(Op.SIGN) == 3  # one ECALL per batch of 100
    assert unanswered[1] == 2  # signed as a stream: the next batch in flight while one batch's signatures are stored
    stored = e2e.cloud.readings("gw-send")
    assert [r.seq for r in stored] == list(range(250))
    assert [r.payload for r in stored] == sent
    key = state.public_key()
    for r in stored[:5]:  # the cloud checked them all; check a few independently with the gateway's key
        verify_reading(Reading("gw-send", r.seq, r.timestamp, r.payload), r.signature, key)
    with Outbox.in_folder(state.folder) as outbox:
        stats = outbox.stats()
    assert (stats.pending, stats.delivered_total, stats.last_error) == (0, 250, None)


def test_cli_send_files_prints_verdicts(e2e: E2E, tmp_path: Path) -> None:
    state = e2e.gateway("gw-files")
    files = []
    for i, data in enumerate([b"temperature=21.5", b"", bytes(range(256))]):
        files.append(tmp_path / f"r{i}")
        files[-1].write_bytes(data)
    result = e2e.cli(state, "gateway", "send", *map(str, files))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(b"stored") >= 3
    assert cloud_payloads(e2e, "gw-files") == [b"temperature=21.5", b"", bytes(range(256))]
    again = e2e.cli(state, "gateway", "send", "--json", str(files[0]))
    doc = json.loads(again.stdout)
    assert again.returncode == 0 and doc["stored"] == 1 and doc["verdicts"][0]["seq"] == 3
    big = tmp_path / "big"
    big.write_bytes(b"x" * (64 * 1024 + 1))
    refused = e2e.cli(state, "gateway", "send", str(big))
    assert refused.returncode == 2 and b"larger than" in refused.stderr
    assert e2e.cli(state, "gateway", "send", "--stdin", str(files[0])).returncode == 2  # both: a usage error
    nothing_waiting = e2e.cli(state, "gateway", "send", "--json")  # no input: only the outbox, which is empty
    assert nothing_waiting.returncode == 0 and json.loads(nothing_waiting.stdout)["stored"] == 0
    mixed = e2e.cli(state, "gateway", "send", "--stdin", input=b"ok-1\n" + b"y" * 70_000 + b"\n\nok-2")
    assert mixed.returncode == 2 and b"line 2 of stdin is longer" in mixed.stderr
    assert cloud_payloads(e2e, "gw-files")[-2:] == [b"ok-1", b"ok-2"]


def test_cli_send_without_input_delivers_what_the_outbox_kept(e2e: E2E, tmp_path: Path) -> None:
    state = e2e.gateway("gw-later")
    reading = tmp_path / "reading"
    reading.write_bytes(b"humidity=40")
    e2e.cloud.stop()
    down = e2e.cli(state, "gateway", "send", "--retry-delay", "0", str(reading))
    assert down.returncode == 2 and b"kept in the outbox" in down.stderr
    e2e.cloud.start()
    later = e2e.cli(state, "gateway", "send", "--json")
    assert later.returncode == 0, later.stderr
    assert json.loads(later.stdout)["stored"] == 1
    assert cloud_payloads(e2e, "gw-later") == [b"humidity=40"]


def test_replay_after_a_crash_neither_loses_nor_duplicates(e2e: E2E) -> None:
    """Crash after the upload but before the acknowledgement was recorded, and after signing but before uploading:
    reopening the outbox and delivering again stores each reading exactly once."""
    state = e2e.gateway("gw-crash")
    with delivery_for(state) as delivery:
        delivery.accept(payloads(30))
        delivery.sign_pending()
        # The upload reaches the cloud, then the process "dies" before deleting the entries.
        verdicts = delivery.client.upload(delivery.outbox.ready(20))
        assert [v.status for v in verdicts] == ["stored"] * 20
    with delivery_for(state) as delivery:  # the restarted gateway
        assert delivery.outbox.depth() == 30
        report = delivery.deliver()
    assert (report.duplicates, report.stored, report.pending) == (20, 10, 0)
    assert cloud_payloads(e2e, "gw-crash") == payloads(30)


def test_unsigned_entries_are_signed_after_a_restart(e2e: E2E) -> None:
    state = e2e.gateway("gw-unsigned")
    with Outbox.in_folder(state.folder) as outbox:  # stored, then the process died before signing
        outbox.enqueue("gw-unsigned", payloads(5))
    with delivery_for(state) as delivery:
        report = delivery.deliver()
    assert (report.signed, report.stored, report.pending) == (5, 5, 0)


def test_cloud_down_readings_wait_then_are_delivered_when_it_returns(e2e: E2E) -> None:
    state = e2e.gateway("gw-down")
    e2e.cloud.stop()
    sleeps: list[float] = []
    retry = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)
    registration = require_registration(state)
    with Outbox.in_folder(state.folder) as outbox, \
            CloudClient(registration.cloud, retry=retry, sleep=sleeps.append) as client, \
            GatewaySession(state) as session:  # fmt: skip
        delivery = Delivery(outbox, session, client, "gw-down", key_sha256=registration.key_sha256, batch=10)
        report = delivery.send(payloads(25))
        assert report.pending == 25 and report.stored == 0
        assert report.error is not None and "CLOUD_UNREACHABLE" in report.error
        assert len(sleeps) == 2  # bounded: 3 attempts, then the readings wait in the outbox
        assert outbox.stats().last_error == report.error
        assert outbox.stats().unsigned == 0  # signed and stored before any upload
        # The run loop keeps retrying with backoff; the cloud comes back on the same port meanwhile.
        restarter = threading.Timer(0.8, e2e.cloud.start)
        restarter.start()
        rounds: list[int] = []
        done = threading.Event()

        def emit(report: DeliveryReport) -> None:
            rounds.append(report.stored)
            if report.pending == 0:
                done.set()

        source = _empty_fifo(e2e.tmp)
        options = RunOptions(idle_exit=30, poll=0.05, backoff=RetryPolicy(base_delay=0.05, max_delay=0.3))
        summary = run(delivery, source, options, emit=emit, stop=done)
        restarter.join()
        source.close()
    assert summary.pending == 0 and summary.stored == 25
    assert len(rounds) >= 2 and rounds[-1] == 25 and sum(rounds[:-1]) == 0
    assert cloud_payloads(e2e, "gw-down") == payloads(25)


def _empty_fifo(folder: Path):  # type: ignore[no-untyped-def]
    path = folder / f"fifo-{random.randrange(1 << 30)}"
    os.mkfifo(path)
    return open_source(str(path))


def test_server_errors_are_retried_with_backoff(e2e: E2E) -> None:
    state = e2e.gateway("gw-flaky")
    with _FlakyProxy(e2e.cloud.url, failures=3) as proxy:
        sleeps: list[float] = []
        registration = require_registration(state)
        retry = RetryPolicy(attempts=5, base_delay=0.01, max_delay=1.0, multiplier=2.0, jitter=0.5)
        with Outbox.in_folder(state.folder) as outbox, CloudClient(proxy.url, retry=retry, sleep=sleeps.append) as \
                client, GatewaySession(state) as session:  # fmt: skip
            delivery = Delivery(outbox, session, client, "gw-flaky", key_sha256=registration.key_sha256)
            report = delivery.send(payloads(3))
    assert report.stored == 3 and report.error is None
    assert proxy.failed == 3
    ceilings = [0.01, 0.02, 0.04]
    assert len(sleeps) == 3
    assert all(c * 0.5 <= s <= c for s, c in zip(sleeps, ceilings, strict=True))


def test_refused_readings_go_to_the_dead_letters_with_their_code(e2e: E2E) -> None:
    state = e2e.gateway("gw-dead")
    with delivery_for(state) as delivery:
        delivery.accept([b"good-0", b"tampered", b"good-2"])
        delivery.sign_pending()
    db = sqlite3.connect(state.folder / OUTBOX_FILE)  # the host's copy of one signature gets corrupted
    (sig,) = db.execute("SELECT signature FROM pending WHERE seq = 1").fetchone()
    db.execute("UPDATE pending SET signature = ? WHERE seq = 1", (bytes(sig[:-1]) + bytes([sig[-1] ^ 1]),))
    db.commit()
    db.close()
    result = e2e.cli(state, "gateway", "send", "--stdin", input=b"good-3\n")
    assert result.returncode == 1
    assert b"BAD_SIGNATURE" in result.stdout
    assert cloud_payloads(e2e, "gw-dead") == [b"good-0", b"good-2", b"good-3"]
    with Outbox.in_folder(state.folder) as outbox:
        (dead,) = outbox.dead_letters()
        assert (dead.reading.seq, dead.reading.payload, dead.code) == (1, b"tampered", "BAD_SIGNATURE")
        assert outbox.depth() == 0
    status = json.loads(e2e.cli(state, "gateway", "status", "--json").stdout)
    assert status["outbox"]["dead_letters"] == 1 and status["dead_letters"][0]["code"] == "BAD_SIGNATURE"
    # Not retried: the next send does not resend it.
    again = e2e.cli(state, "gateway", "send", "--json", "--stdin", input=b"")
    assert again.returncode == 0 and json.loads(again.stdout)["verdicts"] == []


def test_signed_readings_survive_a_key_replacement_and_are_stored_after_registering_again(e2e: E2E) -> None:
    """Readings signed by the old key and still waiting when the gateway gets a new key (``init --force``) are never
    uploaded under a key the cloud does not hold: they wait while the new key is not registered, then the enclave
    signs them again (one SIGN ECALL per batch) and the cloud stores them."""
    state = e2e.gateway("gw-rekey")
    e2e.cloud.stop()
    with delivery_for(state, batch=10) as delivery:
        report = delivery.send(payloads(15))
    assert (report.stored, report.pending) == (0, 15) and "CLOUD_UNREACHABLE" in (report.error or "")
    old_key = key_fingerprint(state.public_key())
    e2e.cloud.start()
    init_gateway(state, platform=e2e.world.platform, force=True)
    new_key = key_fingerprint(state.public_key())
    assert new_key != old_key
    assert gateway_status(state).to_resign == 15

    # Not registered again yet: nothing is uploaded (the cloud holds the old key), nothing is dead-lettered.
    with delivery_for(state, batch=10) as delivery, pytest.raises(UsageError, match="register"):
        delivery.upload_pending()
    with Outbox.in_folder(state.folder) as outbox:
        stats = outbox.stats()
        assert (stats.pending, stats.dead_letters) == (15, 0)
        assert stats.last_error is not None and "register" in stats.last_error
        assert len(outbox.ready(100, key_sha256=old_key)) == 15  # still the old signatures
    assert e2e.cloud.readings("gw-rekey") == []

    e2e.register(state, "gw-rekey")
    ecalls: list[int] = []

    def tap(direction: str, frame: bytes) -> None:
        if direction == "send":
            ecalls.append(frame[5])

    with delivery_for(state, batch=10, tap=tap) as delivery:
        report = delivery.send([b"after"])
    assert (report.signed, report.resigned, report.stored, report.pending, report.dead_lettered, report.error) == (
        1, 15, 16, 0, 0, None)  # fmt: skip
    assert ecalls.count(Op.SIGN) == 3  # the new reading, then the 15 old ones in batches of 10
    stored = e2e.cloud.readings("gw-rekey")
    assert [r.payload for r in stored] == [*payloads(15), b"after"]
    assert {r.key_sha256 for r in stored} == {new_key}
    key = state.public_key()
    for r in stored:
        verify_reading(Reading("gw-rekey", r.seq, r.timestamp, r.payload), r.signature, key)


def test_a_key_mismatch_stops_the_signing_stream_and_leaves_the_enclave_usable(e2e: E2E) -> None:
    """Provisioned again, not registered again: the first signed batch of the stream shows the new key, signing
    stops with a usage error, no signature is stored, and the stream is closed (the enclave answers the next
    ECALL of the same session)."""
    state = e2e.gateway("gw-rekey-3")
    init_gateway(state, platform=e2e.world.platform, force=True)
    with delivery_for(state, batch=10) as delivery:
        delivery.accept(payloads(25))
        with pytest.raises(UsageError, match="register"):
            delivery.sign_pending()
        assert delivery.signer.sign([b"next ECALL"]).signatures
        assert len(delivery.outbox.unsigned(100)) == 25


def test_an_upload_only_round_checks_the_enclave_key_first(e2e: E2E) -> None:
    """With nothing new to sign, the round still asks the enclave for its key (no signature) before uploading: a
    gateway provisioned again and not registered again uploads nothing, even signatures by its old key (the cloud
    may already hold the new key, e.g. when ``register`` was killed before writing registration.json)."""
    state = e2e.gateway("gw-rekey-2")
    with delivery_for(state) as delivery:
        delivery.accept([b"one"])
        delivery.sign_pending()
    init_gateway(state, platform=e2e.world.platform, force=True)
    result = e2e.cli(state, "gateway", "send", "--stdin", input=b"")
    assert result.returncode == 2 and b"register" in result.stderr
    with Outbox.in_folder(state.folder) as outbox:
        assert (outbox.depth(), outbox.stats().dead_letters) == (1, 0)
    e2e.register(state, "gw-rekey-2")
    again = e2e.cli(state, "gateway", "send", "--json", "--stdin", input=b"")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["resigned"] == 1
    assert cloud_payloads(e2e, "gw-rekey-2") == [b"one"]


def test_a_schema_1_outbox_is_signed_again_and_delivered(e2e: E2E) -> None:
    """An outbox written before signatures recorded their key: opened, migrated, its signed entries signed again
    (their key is unknown) and stored."""
    state = e2e.gateway("gw-legacy")
    with delivery_for(state) as delivery:
        delivery.accept(payloads(3))
        delivery.sign_pending()
    with sqlite3.connect(state.folder / OUTBOX_FILE) as db:  # back to what schema 1 held
        db.execute("ALTER TABLE pending DROP COLUMN key_sha256")
        db.execute("ALTER TABLE dead_letters DROP COLUMN key_sha256")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    with delivery_for(state) as delivery:
        report = delivery.deliver()
    assert (report.resigned, report.stored, report.pending) == (3, 3, 0)
    assert cloud_payloads(e2e, "gw-legacy") == payloads(3)


def test_a_lost_outbox_continues_after_the_numbers_the_cloud_holds(e2e: E2E, tmp_path: Path) -> None:
    """Sequence numbers are never reused (the cloud would refuse them as REPLAYED_READING). An outbox not made by
    `gateway register` (the old one was lost) numbers its readings provisionally; before signing any, the gateway
    asks the cloud where to continue and renumbers them. While the cloud cannot tell, they wait unsigned, in any
    process; registering again also renumbers them."""
    state = e2e.gateway("gw-lost")
    assert e2e.cli(state, "gateway", "send", "--stdin", input=b"first\nsecond\n").returncode == 0
    (state.folder / OUTBOX_FILE).unlink()
    result = e2e.cli(state, "gateway", "send", "--stdin", input=b"third\n")
    assert result.returncode == 0 and b"REPLAYED_READING" not in result.stdout, result.stdout
    assert [(r.seq, r.payload) for r in e2e.cloud.readings("gw-lost")] == [(0, b"first"), (1, b"second"),
                                                                          (2, b"third")]

    # Lost again, and the cloud is down: the readings are stored, provisionally numbered, and wait unsigned.
    (state.folder / OUTBOX_FILE).unlink()
    e2e.cloud.stop()
    with delivery_for(state) as delivery:
        report = delivery.send([b"offline-1", b"offline-2"])
        assert (report.signed, report.stored, report.pending) == (0, 0, 2)
        assert report.error is not None and "sequence numbers" in report.error
        assert not delivery.outbox.numbering_confirmed()
    # A sending process that did not create the outbox (deliver only) still waits for the cloud's answer.
    assert e2e.cli(state, "gateway", "send", "--stdin", input=b"").returncode != 0
    with Outbox.in_folder(state.folder) as outbox:
        assert [r.seq for r in outbox.unsigned(10)] == [0, 1] and not outbox.numbering_confirmed()
    # Not an sgx-iot gateway document (a wrong URL prefix answers 404 NOT_FOUND): still not confirmed.
    e2e.cloud.start()
    with delivery_for(state, e2e.cloud.url + "/not-the-api") as delivery:
        assert delivery.deliver().signed == 0 and not delivery.outbox.numbering_confirmed()
    with delivery_for(state) as delivery:
        report = delivery.deliver()
    assert (report.signed, report.stored, report.pending, report.dead_lettered) == (2, 2, 0, 0)
    assert [(r.seq, r.payload) for r in e2e.cloud.readings("gw-lost")][-2:] == [(3, b"offline-1"),
                                                                               (4, b"offline-2")]

    # Registering again renumbers provisional readings too, and the numbering never goes back.
    (state.folder / OUTBOX_FILE).unlink()
    with Outbox.in_folder(state.folder) as outbox:
        outbox.enqueue("gw-lost", [b"before registering"])
    e2e.register(state, "gw-lost")
    with Outbox.in_folder(state.folder) as outbox:
        assert [r.seq for r in outbox.unsigned(10)] == [5] and outbox.numbering_confirmed()
        assert outbox.continue_from(2) == 6

    # A cloud that does not know the gateway (404 GATEWAY_NOT_FOUND) holds none of its numbers.
    other = CloudServer(tmp_path / "other-cloud", e2e.world.policy(), e2e.world.collateral()).start()
    try:
        (state.folder / OUTBOX_FILE).unlink()
        with delivery_for(state, other.url) as delivery:
            report = delivery.send([b"elsewhere"])
            assert delivery.outbox.numbering_confirmed() and report.signed == 1
            assert [r.reading.seq for r in delivery.outbox.ready(10)] == [0]
    finally:
        other.stop()


def test_revoked_and_unregistered_gateways(e2e: E2E, tmp_path: Path) -> None:
    """UNKNOWN_GATEWAY keeps readings for later (register, then they go); GATEWAY_REVOKED dead-letters them."""
    state = e2e.gateway("gw-moved")
    other = CloudServer(tmp_path / "other-cloud", e2e.world.policy(), e2e.world.collateral()).start()
    try:
        with delivery_for(state, other.url) as delivery:
            report = delivery.send([b"early"])
        assert report.refused == 1 and report.pending == 1 and report.dead_lettered == 0
        assert report.error is not None and "UNKNOWN_GATEWAY" in report.error
        e2e.register(state, "gw-moved")  # registered again (same cloud)…
        from sgx_iot.gateway.registration import register

        register(state, other.url, "gw-moved")  # …and with the other cloud
        with delivery_for(state) as delivery:
            report = delivery.deliver()
        assert report.stored == 1 and report.pending == 0
        assert [r.payload for r in other.readings("gw-moved")] == [b"early"]
        other.revoke("gw-moved")
        with delivery_for(state) as delivery:
            report = delivery.send([b"late"])
        assert report.dead_lettered == 1 and report.pending == 0
        with Outbox.in_folder(state.folder) as outbox:
            assert [d.code for d in outbox.dead_letters()] == ["GATEWAY_REVOKED"]
    finally:
        other.stop()


def test_batches_the_cloud_cannot_take_are_split(e2e: E2E, tmp_path: Path) -> None:
    """A cloud that takes at most 7 readings per request and 16 KiB per body: the gateway halves refused batches,
    delivers everything that fits, and dead-letters only the reading that can never fit."""
    import dataclasses

    small = CloudServer(tmp_path / "small", e2e.world.policy(), e2e.world.collateral())
    small.settings = dataclasses.replace(small.settings, max_batch=7, max_body_bytes=16384)
    small.start()
    try:
        state = e2e.gateway("gw-split", registered=False)
        from sgx_iot.gateway.registration import register

        register(state, small.url, "gw-split")
        sent = payloads(20)
        sent.insert(5, b"B" * 20000)
        with delivery_for(state, batch=50) as delivery:
            report = delivery.send(sent)
        assert report.stored == 20 and report.dead_lettered == 1 and report.pending == 0
        assert [r.payload for r in small.readings("gw-split")] == payloads(20)
        with Outbox.in_folder(state.folder) as outbox:
            assert [d.code for d in outbox.dead_letters()] == ["REQUEST_TOO_LARGE"]
    finally:
        small.stop()


def test_kill_9_during_send_loses_nothing_and_reuses_no_number(e2e: E2E) -> None:
    """`gateway send --stdin` killed with SIGKILL while storing, while uploading, and at a random moment; then one
    more send: the cloud holds exactly one reading per allocated number, and no reading was refused."""
    state = e2e.gateway("gw-kill")
    rng = random.Random(2024)
    with Outbox.in_folder(state.folder) as outbox:
        before = outbox.stats()
    for round_, moment in enumerate(["storing", "uploading", "random"]):
        lines = b"".join(b"round%d-%05d\n" % (round_, i) for i in range(2000))
        child = e2e.popen(state, "gateway", "send", "--stdin", "--batch", "50", stdin=subprocess.PIPE,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert child.stdin is not None
        try:
            child.stdin.write(lines)
            child.stdin.close()
        except BrokenPipeError:
            pass
        if moment == "random":
            time.sleep(rng.uniform(0.5, 2.5))
        else:
            deadline = time.monotonic() + 60
            with Outbox.in_folder(state.folder) as outbox:
                while time.monotonic() < deadline and child.poll() is None:
                    stats = outbox.stats()
                    if (moment == "storing" and stats.next_seq > before.next_seq) or \
                            (moment == "uploading" and stats.delivered_total > before.delivered_total):
                        break
                    time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        with Outbox.in_folder(state.folder) as outbox:
            before = outbox.stats()
    final = e2e.process(state, "gateway", "send", "--stdin", "--json", input=b"")
    assert final.returncode == 0, final.stderr
    with Outbox.in_folder(state.folder) as outbox:
        stats = outbox.stats()
        assert (stats.pending, stats.dead_letters) == (0, 0)
        allocated = stats.next_seq
    stored = e2e.cloud.readings("gw-kill")
    assert allocated > 0
    assert [r.seq for r in stored] == list(range(allocated))
    assert len({r.payload for r in stored}) == len(stored)  # no line went in twice under two numbers
    for round_ in range(3):  # within one round, lines were stored in order, without holes
        got = [r.payload for r in stored if r.payload.startswith(b"round%d-" % round_)]
        assert got == [b"round%d-%05d" % (round_, i) for i in range(len(got))]


def test_run_follows_a_growing_file_and_resumes_after_restart(e2e: E2E, tmp_path: Path) -> None:
    state = e2e.gateway("gw-follow")
    source = tmp_path / "sensor.log"
    source.write_bytes(b"line-0\nline-1\n")
    args = ("gateway", "run", "--input", str(source), "--batch", "5", "--flush-interval", "0.2", "--max-readings",
            "24", "--idle-exit", "60", "--json")
    child = e2e.popen(state, *args)
    with source.open("ab") as out:
        for i in range(2, 23):
            out.write(b"line-%d\n" % i)
            out.flush()
            if i % 4 == 0:
                time.sleep(0.15)
        out.write(b"line-23")  # a partial line is not a reading until its newline arrives
        out.flush()
        time.sleep(0.5)
        out.write(b"\n\n")  # (the empty line is skipped)
    stdout, stderr = child.communicate(timeout=90)
    assert child.returncode == 0, stderr
    expected = [b"line-%d" % i for i in range(24)]
    assert cloud_payloads(e2e, "gw-follow") == expected
    assert json_lines(stdout)[-1]["summary"]["read"] == 24
    # Restart: only what was appended since is delivered.
    with source.open("ab") as out:
        out.write(b"line-24\nline-25\n")
    again = e2e.cli(state, "gateway", "run", "--input", str(source), "--flush-interval", "0.1", "--idle-exit", "1",
                    "--json")
    assert again.returncode == 0, again.stderr
    assert cloud_payloads(e2e, "gw-follow") == expected + [b"line-24", b"line-25"]


def test_run_reads_a_fifo_and_stdin(e2e: E2E, tmp_path: Path) -> None:
    state = e2e.gateway("gw-fifo")
    fifo = tmp_path / "readings.fifo"
    os.mkfifo(fifo)
    child = e2e.popen(state, "gateway", "run", "--input", str(fifo), "--max-readings", "6", "--flush-interval",
                      "0.2", "--json")
    for writer in range(2):  # two writers one after the other: the second is read too
        with open(fifo, "wb") as out:
            out.write(b"".join(b"w%d-%d\n" % (writer, i) for i in range(3)))
    stdout, stderr = child.communicate(timeout=90)
    assert child.returncode == 0, stderr
    assert cloud_payloads(e2e, "gw-fifo") == [b"w0-0", b"w0-1", b"w0-2", b"w1-0", b"w1-1", b"w1-2"]
    result = e2e.cli(state, "gateway", "run", "--input", "-", "--json", input=b"s-0\ns-1\n" + b"x" * 70000 + b"\ns-2")
    assert result.returncode == 0, result.stderr
    summary = json_lines(result.stdout)[-1]["summary"]
    assert (summary["read"], summary["skipped"], summary["stored"]) == (3, 1, 3)
    assert cloud_payloads(e2e, "gw-fifo")[6:] == [b"s-0", b"s-1", b"s-2"]


def test_run_stores_what_it_read_on_sigterm(e2e: E2E, tmp_path: Path) -> None:
    state = e2e.gateway("gw-term")
    source = tmp_path / "in.log"
    source.write_bytes(b"".join(b"t-%d\n" % i for i in range(10)))
    e2e.cloud.stop()  # nothing can be uploaded: the lines must end up in the outbox
    child = e2e.popen(state, "gateway", "run", "--input", str(source), "--flush-interval", "30", "--retry-delay", "5")
    assert child.stderr is not None
    assert b"reading" in child.stderr.readline()  # the loop has started (signal handlers in place)
    time.sleep(1.0)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 2, stderr  # stopped with readings left undelivered
    with Outbox.in_folder(state.folder) as outbox:
        assert outbox.depth() == 10
        assert outbox.unsigned(100) == []
    e2e.cloud.start()
    assert e2e.cli(state, "gateway", "send", "--stdin", input=b"").returncode == 0
    assert cloud_payloads(e2e, "gw-term") == [b"t-%d" % i for i in range(10)]


class _FlakyProxy:
    """A real HTTP server on loopback that answers 503 to the first ``failures`` requests for readings, then
    forwards everything to the cloud."""

    def __init__(self, upstream: str, failures: int) -> None:
        self.failed = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0) or 0))
                if self.path == "/v1/readings" and proxy.failed < failures:
                    proxy.failed += 1
                    data = json.dumps({"error": {"code": "DATABASE_UNAVAILABLE", "message": "retry"}}).encode()
                    self.send_response(503)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                answer = httpx.request(self.command, upstream + self.path, content=body,
                                       headers={"content-type": "application/json"})
                self.send_response(answer.status_code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = _forward

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> _FlakyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_signature_wire_form_is_base64_der(e2e: E2E) -> None:
    """What is uploaded is SignedReading.to_dict(): the cloud stores exactly the enclave's DER signature."""
    state = e2e.gateway("gw-wire")
    with delivery_for(state) as delivery:
        delivery.accept([b"wire"])
        delivery.sign_pending()
        (signed,) = delivery.outbox.ready(1)
        delivery.upload_pending()
    (stored,) = e2e.cloud.readings("gw-wire")
    assert stored.signature == signed.signature and signed.signature[0] == 0x30  # DER SEQUENCE
    assert base64.b64decode(signed.to_dict()["signature"]) == signed.signature
