"""The gateway's durable outbox (SQLite): sequence numbers, signatures, acknowledgements, dead letters, crashes;
and the gateway's small parsers (the cloud's verdicts, the registration file, input lines), fuzzed.

The crash tests kill a real process (SIGKILL) that is writing to the outbox, then reopen the file.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_iot.errors import FormatError, UsageError
from sgx_iot.gateway.cloud_client import RetryPolicy, parse_verdicts
from sgx_iot.gateway.inputs import LineSource
from sgx_iot.gateway.outbox import OUTBOX_FILE, Outbox
from sgx_iot.gateway.registration import Registration
from sgx_iot.verify.readings import MAX_PAYLOAD, Reading, SignedReading


def test_sequence_numbers_are_consecutive_and_survive_reopening(tmp_path: Path) -> None:
    with Outbox.in_folder(tmp_path, clock=lambda: 1_700_000_000.5) as box:
        first = box.enqueue("gw", [b"a", b"b", b"c"])
        assert [r.seq for r in first] == [0, 1, 2]
        assert first[0] == Reading("gw", 0, 1_700_000_000, b"a")
    with Outbox.in_folder(tmp_path) as box:
        assert box.next_seq() == 3
        assert [r.seq for r in box.enqueue("gw", [b"d"], timestamp=5)] == [3]
        assert box.depth() == 4
        assert [r.payload for r in box.unsigned(10)] == [b"a", b"b", b"c", b"d"]


def test_numbers_are_not_reused_after_entries_leave(tmp_path: Path) -> None:
    with Outbox.in_folder(tmp_path) as box:
        readings = box.enqueue("gw", [b"a", b"b"])
        box.set_signatures([(r.seq, b"sig") for r in readings])
        assert box.acknowledge([0, 1]) == 2
        assert box.depth() == 0
    with Outbox.in_folder(tmp_path) as box:
        assert [r.seq for r in box.enqueue("gw", [b"c"])] == [2]


def test_a_refused_enqueue_allocates_nothing(tmp_path: Path) -> None:
    with Outbox.in_folder(tmp_path) as box:
        box.enqueue("gw", [b"a"])
        with pytest.raises(FormatError) as info:
            box.enqueue("gw", [b"ok", b"x" * (MAX_PAYLOAD + 1)])
        assert info.value.field == "payload"
        with pytest.raises(FormatError):
            box.enqueue("bad name!", [b"a"])
        assert box.next_seq() == 1
        assert box.depth() == 1


def test_signing_uploading_acknowledging(tmp_path: Path) -> None:
    with Outbox.in_folder(tmp_path) as box:
        readings = box.enqueue("gw", [b"p0", b"p1", b"p2", b"p3"])
        assert box.ready(10) == []
        box.set_signatures([(0, b"s0"), (2, b"s2")])
        assert [r.seq for r in box.unsigned(10)] == [1, 3]
        ready = box.ready(10)
        assert [(r.reading, r.signature) for r in ready] == [(readings[0], b"s0"), (readings[2], b"s2")]
        assert [r.reading.seq for r in box.ready(10, after=0)] == [2]
        assert box.acknowledge([0, 99]) == 1
        stats = box.stats()
        assert (stats.pending, stats.unsigned, stats.delivered_total, stats.next_seq) == (3, 2, 1, 4)
        assert stats.last_upload_at is not None


def test_dead_letters_keep_the_reading_and_the_code(tmp_path: Path) -> None:
    with Outbox.in_folder(tmp_path, clock=lambda: 1000.0) as box:
        box.enqueue("gw", [b"p0", b"p1"])
        box.set_signatures([(0, b"s0"), (1, b"s1")])
        assert box.dead_letter([(1, "BAD_SIGNATURE", "not signed by the attested key"), (7, "X", "gone")]) == 1
        assert box.depth() == 1
        (dead,) = box.dead_letters()
        assert (dead.reading, dead.signature, dead.code, dead.failed_at) == (Reading("gw", 1, 1000, b"p1"), b"s1",
                                                                              "BAD_SIGNATURE", 1000.0)
        assert box.stats().dead_letters == 1
        assert [r.reading.seq for r in box.ready(10)] == [0]  # never sent again


def test_errors_and_attempts_are_recorded(tmp_path: Path) -> None:
    with Outbox.in_folder(tmp_path, clock=lambda: 42.0) as box:
        box.enqueue("gw", [b"p"])
        box.record_attempt([0], "CLOUD_UNREACHABLE: cannot connect")
        stats = box.stats()
        assert (stats.last_error, stats.last_error_at) == ("CLOUD_UNREACHABLE: cannot connect", 42.0)
        box.clear_error()
        assert box.stats().last_error is None


def test_input_offsets_are_stored_with_the_readings(tmp_path: Path) -> None:
    with Outbox.in_folder(tmp_path) as box:
        assert box.input_offset("file:x") is None
        box.enqueue("gw", [b"a", b"b"], source="file:x", offset=4)
        box.enqueue("gw", [b"c"], source="file:x", offset=6)
        with pytest.raises(FormatError):
            box.enqueue("gw", [b"x" * (MAX_PAYLOAD + 1)], source="file:x", offset=99)
        assert box.input_offset("file:x") == 6


def test_the_file_is_private(tmp_path: Path) -> None:
    Outbox.in_folder(tmp_path).close()
    assert (tmp_path / OUTBOX_FILE).stat().st_mode & 0o077 == 0


def test_a_corrupt_outbox_is_a_format_error(tmp_path: Path) -> None:
    (tmp_path / OUTBOX_FILE).write_bytes(b"this is not a database" * 100)
    with pytest.raises(FormatError) as info:
        Outbox.in_folder(tmp_path)
    assert OUTBOX_FILE in info.value.structure


def test_an_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    Outbox.in_folder(tmp_path).close()
    db = sqlite3.connect(tmp_path / OUTBOX_FILE)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(FormatError) as info:
        Outbox.in_folder(tmp_path)
    assert info.value.field == "schema_version"


KEY_A, KEY_B = "a" * 64, "b" * 64

# The schema of the first released outbox (version 1): no signing-key column.
_SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE pending (seq INTEGER PRIMARY KEY, gateway TEXT NOT NULL, timestamp INTEGER NOT NULL,
    payload BLOB NOT NULL, signature BLOB, created_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT);
CREATE TABLE dead_letters (seq INTEGER PRIMARY KEY, gateway TEXT NOT NULL, timestamp INTEGER NOT NULL,
    payload BLOB NOT NULL, signature BLOB, code TEXT NOT NULL, message TEXT NOT NULL, failed_at REAL NOT NULL);
CREATE TABLE inputs (source TEXT PRIMARY KEY, consumed INTEGER NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1'), ('next_seq', '3'), ('delivered_total', '7');
INSERT INTO pending(seq, gateway, timestamp, payload, signature, created_at) VALUES
    (1, 'gw', 10, x'7031', x'5331', 5.0), (2, 'gw', 11, x'7032', NULL, 6.0);
INSERT INTO dead_letters VALUES (0, 'gw', 9, x'7030', x'5330', 'BAD_SIGNATURE', 'refused', 4.0);
INSERT INTO inputs VALUES ('file:x', 42);
"""


def write_schema_1(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA_1)
    db.close()


def test_signatures_record_their_key_and_other_keys_are_listed_for_signing_again(tmp_path: Path) -> None:
    with Outbox.in_folder(tmp_path, clock=lambda: 1000.0) as box:
        readings = box.enqueue("gw", [b"p0", b"p1", b"p2", b"p3"])
        box.set_signatures([(0, b"s0"), (1, b"s1")], KEY_A)
        box.set_signatures([(2, b"s2")], KEY_B)
        box.set_signatures([(3, b"s3")])  # key not known
        assert box.signed_by_other_key(KEY_B, 10) == [readings[0], readings[1], readings[3]]
        assert box.signed_by_other_key(KEY_B, 1) == [readings[0]]
        assert box.count_signed_by_other_key(KEY_A) == 2
        assert [r.reading.seq for r in box.ready(10, key_sha256=KEY_A)] == [0, 1]
        assert [r.reading.seq for r in box.ready(10)] == [0, 1, 2, 3]
        box.set_signatures([(0, b"t0"), (1, b"t1"), (3, b"t3")], KEY_B)  # signed again by the current key
        assert box.signed_by_other_key(KEY_B, 10) == []
        assert [(r.reading.seq, r.signature) for r in box.ready(10, key_sha256=KEY_B)] == [
            (0, b"t0"), (1, b"t1"), (2, b"s2"), (3, b"t3")]  # fmt: skip
        box.dead_letter([(2, "BAD_SIGNATURE", "refused")])
        (dead,) = box.dead_letters()
        assert (dead.reading.seq, dead.signature, dead.key_sha256) == (2, b"s2", KEY_B)


def test_a_schema_1_outbox_is_migrated_in_place(tmp_path: Path) -> None:
    write_schema_1(tmp_path / OUTBOX_FILE)
    for _ in range(2):  # opening again finds it migrated and changes nothing
        with Outbox.in_folder(tmp_path, clock=lambda: 1000.0) as box:
            assert (box.next_seq(), box.depth(), box.input_offset("file:x")) == (3, 2, 42)
            assert box.unsigned(10) == [Reading("gw", 2, 11, b"p2")]
            assert [(r.reading, r.signature) for r in box.ready(10)] == [(Reading("gw", 1, 10, b"p1"), b"S1")]
            assert box.ready(10, key_sha256=KEY_A) == []  # no key recorded: it will be signed again
            assert box.signed_by_other_key(KEY_A, 10) == [Reading("gw", 1, 10, b"p1")]
            (dead,) = box.dead_letters()
            assert (dead.reading.seq, dead.signature, dead.code, dead.key_sha256) == (0, b"S0", "BAD_SIGNATURE", None)
            assert box.stats().delivered_total == 7
    with sqlite3.connect(tmp_path / OUTBOX_FILE) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("2",)
    with Outbox.in_folder(tmp_path) as box:  # and it works as a current outbox
        assert box.numbering_confirmed()  # an outbox with a history is not provisional
        assert [r.seq for r in box.enqueue("gw", [b"p3"])] == [3]
        box.set_signatures([(1, b"t1"), (2, b"t2")], KEY_A)
        assert [r.reading.seq for r in box.ready(10, key_sha256=KEY_A)] == [1, 2]


def test_a_new_outbox_numbers_provisionally_until_continue_from(tmp_path: Path) -> None:
    """continue_from(n): provisional readings below n move up, in order, by one shift (through numbers other
    readings still hold); once confirmed, numbers only ever go forward and no reading is renumbered."""
    with Outbox.in_folder(tmp_path) as box:
        assert not box.numbering_confirmed()
        box.enqueue("gw", [b"r%d" % i for i in range(5)])
        assert box.continue_from(2) == 7
        assert [(r.seq, r.payload) for r in box.unsigned(10)] == [(2 + i, b"r%d" % i) for i in range(5)]
        assert box.numbering_confirmed()
    with Outbox.in_folder(tmp_path) as box:  # confirmed for good: the next process does not ask again
        assert box.numbering_confirmed() and box.next_seq() == 7
        assert box.continue_from(100) == 100 and [r.seq for r in box.unsigned(10)] == [2, 3, 4, 5, 6]
        assert box.continue_from(50) == 100
        assert [r.seq for r in box.enqueue("gw", [b"next"])] == [100]
    with Outbox.in_folder(tmp_path) as box, pytest.raises(UsageError):
        box.continue_from(-1)


def test_a_half_migrated_outbox_is_completed(tmp_path: Path) -> None:
    """A column already added (by hand, or by a newer build) while the version still says 1: only what is missing is
    added."""
    write_schema_1(tmp_path / OUTBOX_FILE)
    with sqlite3.connect(tmp_path / OUTBOX_FILE) as db:
        db.execute("ALTER TABLE pending ADD COLUMN key_sha256 TEXT")
        db.execute("UPDATE pending SET key_sha256 = ? WHERE seq = 1", (KEY_A,))
    with Outbox.in_folder(tmp_path) as box:
        assert [r.reading.seq for r in box.ready(10, key_sha256=KEY_A)] == [1]
        box.dead_letter([(1, "X", "gone")])
        assert box.dead_letters()[0].key_sha256 == KEY_A


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["enqueue", "sign", "ack", "dead", "reopen"]), st.integers(0, 5)),
                max_size=25))
def test_model_sequences_never_repeat(tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int]]) -> None:
    """Whatever happens in between, numbers are unique and increasing, and the depth is what was not removed."""
    folder = tmp_path_factory.mktemp("model")
    box = Outbox.in_folder(folder)
    issued: list[int] = []
    alive: set[int] = set()
    try:
        for op, n in ops:
            if op == "enqueue":
                new = [r.seq for r in box.enqueue("gw", [b"x"] * n)]
                assert all(s > max(issued, default=-1) for s in new)
                issued += new
                alive.update(new)
            elif op == "sign":
                box.set_signatures([(s, b"sig") for s in sorted(alive)[:n]])
            elif op == "ack":
                gone = sorted(alive)[:n]
                assert box.acknowledge(gone) == len(gone)
                alive.difference_update(gone)
            elif op == "dead":
                gone = sorted(alive)[-n:] if n else []
                assert box.dead_letter((s, "C", "m") for s in gone) == len(gone)
                alive.difference_update(gone)
            else:
                box.close()
                box = Outbox.in_folder(folder)
            assert box.depth() == len(alive)
        assert box.next_seq() == len(issued)
    finally:
        box.close()


_WRITER = """
import sys
from sgx_iot.gateway.outbox import Outbox
box = Outbox.in_folder(sys.argv[1])
n = 0
while True:
    readings = box.enqueue("gw", [b"x%d" % (n + i) for i in range(7)])
    n += 7
    sys.stdout.write(" ".join(str(r.seq) for r in readings) + "\\n")
    sys.stdout.flush()
    if len(readings) and readings[0].seq % 3 == 0:
        box.set_signatures([(r.seq, b"s") for r in readings])
    if readings[0].seq % 5 == 0:
        box.acknowledge([readings[0].seq])
"""


def test_sequence_numbers_survive_kill_9(tmp_path: Path) -> None:
    """A writer killed with SIGKILL at random moments: every number it reported is stored, none is reused."""
    rng = random.Random(7)
    reported: list[int] = []
    for _ in range(6):
        child = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE)
        time.sleep(rng.uniform(0.3, 0.9))
        os.kill(child.pid, signal.SIGKILL)
        out, _ = child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL
        # A line is printed only after its transaction committed; the last line may be cut by the kill.
        lines = out.decode().split("\n")[:-1]
        reported += [int(s) for line in lines for s in line.split()]
    assert reported, "the writer never committed anything"
    assert len(reported) == len(set(reported)), "a sequence number was handed out twice"
    assert reported == sorted(reported)
    with Outbox.in_folder(tmp_path) as box:
        assert box.next_seq() > max(reported)
        db = sqlite3.connect(tmp_path / OUTBOX_FILE)
        stored = {s for (s,) in db.execute("SELECT seq FROM pending")}
        db.close()
        acknowledged = box.stats().delivered_total
        # Every allocated number is either still pending or was acknowledged (written in the same transactions).
        assert len(stored) + acknowledged == box.next_seq()
        assert set(reported) - stored <= {s for s in reported if s % 5 == 0}


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 12), st.floats(0, 10), st.floats(0, 100), st.floats(1, 4), st.floats(0, 1), st.integers())
def test_backoff_is_exponential_bounded_and_jittered(retry: int, base: float, cap: float, mult: float, jitter: float,
                                                     seed: int) -> None:
    policy = RetryPolicy(attempts=3, base_delay=base, max_delay=cap, multiplier=mult, jitter=jitter)
    ceiling = min(cap, base * mult ** (retry - 1))
    delay = policy.delay(retry, random.Random(seed))
    assert ceiling * (1 - jitter) - 1e-9 <= delay <= ceiling + 1e-9
    steady = RetryPolicy(attempts=3, base_delay=base, max_delay=cap, multiplier=mult, jitter=0)
    assert steady.delay(retry + 1) >= steady.delay(retry) == ceiling


# --- parsers: the cloud's verdicts, input lines (hypothesis) -------------------------------------------------------

_SENT = [SignedReading(Reading("gw", 5, 1, b"a"), b"s"), SignedReading(Reading("gw", 6, 1, b"b"), b"s")]
_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                     max_leaves=12)


def _verdict(seq: int, status: str = "stored", code: str | None = None) -> dict[str, object]:
    return {"index": 0, "gateway": "gw", "seq": seq, "status": status, "code": code, "message": "m"}


def test_verdicts_are_checked_against_what_was_sent() -> None:
    good = {"verdicts": [_verdict(5), _verdict(6, "refused", "BAD_SIGNATURE")]}
    assert [(v.seq, v.acknowledged) for v in parse_verdicts(good, _SENT)] == [(5, True), (6, False)]
    bad_documents = {
        "verdicts": [{"verdicts": [_verdict(5)]}, {"verdicts": [_verdict(6), _verdict(5)]}, {"nothing": 1}, [1]],
        "verdicts[1].status": [{"verdicts": [_verdict(5), _verdict(6, "lost")]}],
        "verdicts[1].code": [{"verdicts": [_verdict(5), _verdict(6, "refused")]}],
        "seq": [{"verdicts": [_verdict(5), {**_verdict(6), "seq": True}]}],
    }
    for field_name, docs in bad_documents.items():
        for doc in docs:
            with pytest.raises(FormatError) as info:
                parse_verdicts(doc, _SENT)
            assert info.value.field in (field_name, "(document)", "verdicts[1]", "verdicts[0]")


@settings(max_examples=300, deadline=None)
@given(_JSON)
def test_fuzz_verdicts(doc: object) -> None:
    try:
        parse_verdicts(doc, _SENT)
    except FormatError:
        pass


@settings(max_examples=300, deadline=None)
@given(_JSON)
def test_fuzz_registration_file(doc: object) -> None:
    try:
        Registration.from_json(json.dumps(doc))
    except FormatError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b"a", b"bc", b"\n", b"\n\n", b"x" * 40_000, b"\xff"]), max_size=12),
       st.lists(st.integers(1, 70_000), min_size=1, max_size=8))
def test_lines_do_not_depend_on_how_the_bytes_arrive(pieces: list[bytes], cuts: list[int]) -> None:
    """Whatever the chunking, a source yields the non-empty lines, skips the too-long ones, and the offset after
    each line is where the next one starts."""
    data = b"".join(pieces)
    chunks: list[bytes] = []
    rest, i = data, 0
    while rest:
        size = cuts[i % len(cuts)]
        chunks.append(rest[:size])
        rest, i = rest[size:], i + 1
    source = LineSource(-1, name="test", owned=False, offset=0)
    lines = [line for chunk in chunks for line in source._split(chunk)]
    complete = data[: data.rfind(b"\n") + 1].split(b"\n")[:-1] if b"\n" in data else []
    assert [line.data for line in lines if line.error is None] == [c for c in complete if c and len(c) <= MAX_PAYLOAD]
    assert sum(1 for line in lines if line.error) == sum(1 for c in complete if len(c) > MAX_PAYLOAD)
    ends = [line.end for line in lines]
    assert ends == sorted(ends) and all(e is not None and data[e - 1 : e] == b"\n" for e in ends)
