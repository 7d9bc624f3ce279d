"""Kill -9 the cloud during ingest: a real ``sgx-iot cloud serve`` process on a SQLite file is killed (SIGKILL, as
a power cut of the process would) while gateways upload batches of readings, then restarted on the same database.

Afterwards: every reading the service acknowledged before a kill is stored, with its exact content; the uploaders'
retries (at least once, like the gateway's outbox) complete the rest; nothing is stored twice; the database passes
SQLite's integrity check.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from _cloud_helpers import SimWorld, make_world
from _threat_helpers import CloudProcess, signed

from sgx_iot.verify.readings import SignedReading

pytestmark = pytest.mark.slow

GATEWAYS = 4
READINGS = 500  # per gateway
BATCH = 25
KILLS = 3


@dataclass
class Uploader:
    """Uploads one gateway's readings in order, retrying a batch until the service answers it (at least once)."""

    url: str
    readings: list[SignedReading]
    acknowledged: dict[int, SignedReading] = field(default_factory=dict)
    retries: int = 0
    statuses: list[int] = field(default_factory=list)
    error: BaseException | None = None

    def run(self, deadline: float) -> None:
        try:
            with httpx.Client(base_url=self.url, timeout=15) as client:
                for start in range(0, len(self.readings), BATCH):
                    part = self.readings[start : start + BATCH]
                    while True:
                        if time.monotonic() > deadline:
                            raise TimeoutError("uploads did not complete in time")
                        try:
                            response = client.post("/v1/readings", json={"readings": [r.to_dict() for r in part]})
                        except httpx.TransportError:
                            self.retries += 1
                            time.sleep(0.05)
                            continue
                        self.statuses.append(response.status_code)
                        if response.status_code >= 500:  # e.g. 503 while the database is busy: retry as well
                            self.retries += 1
                            time.sleep(0.05)
                            continue
                        verdicts = response.json()["verdicts"]
                        for verdict, reading in zip(verdicts, part, strict=True):
                            assert verdict["status"] in ("stored", "duplicate"), verdict
                            self.acknowledged[reading.reading.seq] = reading
                        break
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> SimWorld:
    return make_world(tmp_path_factory.mktemp("platform"))


def test_cloud_killed_during_ingest_loses_no_acknowledged_reading(tmp_path: Path, world: SimWorld) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(world.policy().to_toml())
    db = tmp_path / "cloud.db"
    cloud = CloudProcess(tmp_path / "home", policy, db_url=f"sqlite:///{db}").start()
    try:
        names = [f"gw-{i}" for i in range(GATEWAYS)]
        with httpx.Client(base_url=cloud.url, timeout=15) as client:
            for name in names:
                nonce = bytes.fromhex(client.post("/v1/challenges").json()["nonce"])
                r = client.post("/v1/gateways", json={"name": name, "evidence": world.evidence(nonce, name).to_dict()})
                assert r.status_code == 201, r.text
        uploaders = [Uploader(cloud.url, [signed(world.key(name), name, seq, b"%s:%d" % (name.encode(), seq),
                                                 1_700_000_000 + seq) for seq in range(READINGS)])
                     for name in names]
        deadline = time.monotonic() + 90
        threads = [threading.Thread(target=u.run, args=(deadline,), daemon=True) for u in uploaders]
        for t in threads:
            t.start()

        rng = random.Random(7)
        total = GATEWAYS * READINGS
        acknowledged_before_kill: list[dict[tuple[str, int], SignedReading]] = []
        for fraction in (0.15, 0.45, 0.75):
            # Kill when the stream is well under way (progress, not time: the machine's speed does not matter),
            # a few milliseconds later, at an arbitrary point of whatever batches are being ingested.
            while sum(len(u.acknowledged) for u in uploaders) < fraction * total:
                assert time.monotonic() < deadline and any(t.is_alive() for t in threads)
                time.sleep(0.001)
            time.sleep(rng.uniform(0, 0.02))
            snapshot = {(r.reading.gateway, r.reading.seq): r for u in uploaders for r in list(u.acknowledged.values())}
            cloud.kill()
            acknowledged_before_kill.append(snapshot)
            cloud.start()
        for t in threads:
            t.join(timeout=max(1.0, deadline - time.monotonic()))
        for u in uploaders:
            assert u.error is None, repr(u.error)
        assert sum(u.retries for u in uploaders) >= KILLS, "the kills did not interrupt any upload"

        # Every reading is stored exactly once, with its content; the acknowledged ones included.
        with httpx.Client(base_url=cloud.url, timeout=15) as client:
            held: dict[tuple[str, int], tuple[int, str, str]] = {}
            for name in names:
                rows = client.get("/v1/readings", params={"gateway": name, "limit": 1000}).json()["readings"]
                for row in rows:
                    assert (name, row["seq"]) not in held
                    held[(name, row["seq"])] = (row["timestamp"], row["payload"], row["signature"])
        expected = {(r.reading.gateway, r.reading.seq): r for u in uploaders for r in u.readings}
        assert set(held) == set(expected)
        for key, sr in expected.items():
            doc = sr.to_dict()
            assert held[key] == (doc["timestamp"], doc["payload"], doc["signature"])
        for snapshot in acknowledged_before_kill:
            assert snapshot and all(held[key] == tuple(sr.to_dict()[f] for f in ("timestamp", "payload", "signature"))
                                    for key, sr in snapshot.items())
    finally:
        cloud.kill()

    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        (rows,) = connection.execute("SELECT COUNT(*) FROM readings").fetchone()
        (distinct,) = connection.execute(
            "SELECT COUNT(*) FROM (SELECT DISTINCT gateway_id, seq FROM readings)").fetchone()
    assert rows == distinct == GATEWAYS * READINGS
