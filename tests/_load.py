"""A load run against a real ``sgx-iot cloud serve`` process on loopback (used by tests/test_load.py at a small size
and by bench/bench_load.py at full size).

``gateways`` threads each register a gateway by attestation (challenge, simulated-platform evidence, registration)
and then upload their ``readings`` in batches of ``batch``; gateways start a little apart, so registrations happen
while others upload. Every response is recorded (status, latency). Afterwards the database is read directly and
compared, row by row, with what was sent.
"""

from __future__ import annotations

import sqlite3
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from _cloud_helpers import SimWorld
from _threat_helpers import CloudProcess

from sgx_iot.verify.readings import Reading, SignedReading, sign_reading


@dataclass
class Timings:
    """Latencies (seconds) and statuses of one kind of request."""

    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, status: int, seconds: float) -> None:
        with self.lock:
            self.statuses.append(status)
            self.latencies.append(seconds)

    def percentile(self, p: float) -> float:
        values = sorted(self.latencies)
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]

    def summary(self) -> str:
        if not self.latencies:
            return "no requests"
        ms = [1000 * self.percentile(p) for p in (50, 95, 99)]
        return (f"{len(self.latencies)} requests, p50 {ms[0]:.1f} ms, p95 {ms[1]:.1f} ms, p99 {ms[2]:.1f} ms, "
                f"max {1000 * max(self.latencies):.1f} ms, mean {1000 * statistics.fmean(self.latencies):.1f} ms")


@dataclass
class LoadReport:
    """What a load run did and what the database held afterwards."""

    gateways: int
    readings: int
    seconds: float
    registrations: Timings
    uploads: Timings
    errors: list[str]
    expected: dict[tuple[str, int], tuple[int, bytes, bytes]]
    held: dict[tuple[str, int], tuple[int, bytes, bytes]]
    duplicate_rows: int
    gateway_rows: int

    @property
    def throughput(self) -> float:
        """Readings stored per second of the run (registrations included)."""
        return self.readings / self.seconds if self.seconds else float("nan")

    def server_errors(self) -> int:
        return sum(1 for s in self.registrations.statuses + self.uploads.statuses if s >= 500)

    def lines(self) -> list[str]:
        return [
            f"{self.gateways} gateways x {self.readings // max(1, self.gateways)} readings = {self.readings} readings "
            f"in {self.seconds:.2f} s: {self.throughput:.0f} readings/s",
            f"registrations: {self.registrations.summary()}",
            f"reading batches: {self.uploads.summary()}",
            f"5xx: {self.server_errors()}, client errors: {len(self.errors)}, rows: {len(self.held)} "
            f"(expected {len(self.expected)}), duplicate rows: {self.duplicate_rows}",
        ]


def presign(world: SimWorld, gateways: int, readings: int) -> dict[str, list[SignedReading]]:
    """Every gateway's readings, signed in advance (the enclave's work is not what is measured)."""
    out: dict[str, list[SignedReading]] = {}
    for g in range(gateways):
        name = f"load-{g:03d}"
        key = world.key(name)
        out[name] = []
        for seq in range(readings):
            reading = Reading(name, seq, 1_700_000_000 + seq, b'{"gw":%d,"seq":%d,"t":21.5}' % (g, seq))
            out[name].append(SignedReading(reading, sign_reading(reading, key)))
    return out


def run_load(folder: Path, world: SimWorld, signed: dict[str, list[SignedReading]], *, batch: int,
             stagger: float = 0.02, timeout: float = 300.0) -> LoadReport:
    """Start a cloud in ``folder``, run the load, stop the cloud, read its database back."""
    policy = folder / "policy.toml"
    folder.mkdir(parents=True, exist_ok=True)
    policy.write_text(world.policy().to_toml())
    db = folder / "cloud.db"
    cloud = CloudProcess(folder / "home", policy, db_url=f"sqlite:///{db}").start()
    registrations, uploads = Timings(), Timings()
    errors: list[str] = []
    deadline = time.monotonic() + timeout
    quoting = threading.Lock()  # one simulated quoting enclave: quotes are made one at a time, as on a real machine

    def gateway(index: int, name: str) -> None:
        time.sleep(index * stagger)
        try:
            with httpx.Client(base_url=cloud.url, timeout=60) as client:
                started = time.perf_counter()
                nonce = bytes.fromhex(client.post("/v1/challenges").json()["nonce"])
                with quoting:
                    evidence = world.evidence(nonce, name).to_dict()
                r = client.post("/v1/gateways", json={"name": name, "evidence": evidence})
                registrations.add(r.status_code, time.perf_counter() - started)
                if r.status_code != 201:
                    errors.append(f"{name}: registration {r.status_code} {r.text[:200]}")
                    return
                items = signed[name]
                for start in range(0, len(items), batch):
                    if time.monotonic() > deadline:
                        errors.append(f"{name}: timed out")
                        return
                    body = {"readings": [sr.to_dict() for sr in items[start : start + batch]]}
                    t0 = time.perf_counter()
                    r = client.post("/v1/readings", json=body)
                    uploads.add(r.status_code, time.perf_counter() - t0)
                    if r.status_code != 200:
                        errors.append(f"{name}: upload {r.status_code} {r.text[:200]}")
                        continue
                    bad = [v for v in r.json()["verdicts"] if v["status"] != "stored"]
                    if bad:
                        errors.append(f"{name}: {len(bad)} readings not stored, first {bad[0]}")
        except Exception as exc:  # noqa: BLE001 - reported
            errors.append(f"{name}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=gateway, args=(i, name), daemon=True) for i, name in enumerate(signed)]
    started = time.perf_counter()
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(1.0, deadline - time.monotonic()))
        seconds = time.perf_counter() - started
        alive = sum(t.is_alive() for t in threads)
        if alive:
            errors.append(f"{alive} gateways still running at the deadline")
    finally:
        cloud.stop()

    expected = {(name, sr.reading.seq): (sr.reading.timestamp, sr.reading.payload, sr.signature)
                for name, items in signed.items() for sr in items}
    held: dict[tuple[str, int], tuple[int, bytes, bytes]] = {}
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT g.name, r.seq, r.timestamp, r.payload, r.signature FROM readings r "
                         "JOIN gateways g ON g.id = r.gateway_id").fetchall()
        (gateway_rows,) = c.execute("SELECT COUNT(*) FROM gateways").fetchone()
    for name, seq, ts, payload, signature in rows:
        held[(name, seq)] = (ts, bytes(payload), bytes(signature))
    return LoadReport(len(signed), len(expected), seconds, registrations, uploads, errors, expected, held,
                      len(rows) - len(held), gateway_rows)
