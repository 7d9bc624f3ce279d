"""Ingest of signed readings over HTTP, as a ratio to raw signature verification measured in the same run.

Starts ``sgx-iot cloud serve`` (one worker, SQLite in a temporary folder) as a separate process on a loopback port,
registers a gateway with real simulated-platform evidence, then posts batches of 1, 10 and 100 pre-signed readings
(pre-encoded, over two keep-alive connections so the single worker is never idle between requests) and reports
verified-and-stored readings per second. The baseline is ``verify_reading`` (ECDSA P-256 over the
canonical encoding) in this process on the same readings. Five rounds per batch size, each posting new readings
and then verifying them raw: "ratio" compares the best round of each (as bench_enclave_sign does, so that noise
from other tenants of the machine hits both alike), "median" the median rounds. Target: ratio ≥ 0.8 at batch 100.
About 15 s. ``--workers N`` runs the service with N worker processes (default 1).

The client is a bare HTTP/1.1 writer on two sockets (complete requests, ``Content-Length``, keep-alive; the
JSON answer is parsed and its ``stored`` count checked): with an HTTP library the client process used a third of
the two CPUs the service runs on, and the figure measured that library as much as the service.

"CPU ratio" is the CPU time of the raw verifications divided by the server process's CPU time for the same
readings, over all rounds: the same comparison, insensitive to other load on the machine (wall-clock ratios are
not). The service
verifies a batch's signatures on two threads (ECDSA releases the GIL) and stores on a third, so on two cores its
CPU can exceed its wall time: "server cores" is its CPU time over the wall time, "client cores" the same for
this process's two sending threads, which share the machine with it.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot.platform.sim import SimPlatform, build_collateral
from sgx_iot.sgx.attributes import Attributes
from sgx_iot.sgx.keybinding import bind_key
from sgx_iot.sgx.measure import EnclaveImage, Page
from sgx_iot.sgx.sigstruct import Sigstruct, generate_signing_key
from sgx_iot.verify.evidence import Evidence
from sgx_iot.verify.policy import Policy, TrustRoot
from sgx_iot.verify.readings import Reading, SignedReading, sign_reading, verify_reading

PAYLOAD = b'{"temperature": 21.5, "humidity": 40.2, "pressure": 1013.1}'
PLAN = {1: 200, 10: 1000, 100: 3000}  # batch size -> readings per round
ROUNDS = 5
CONNECTIONS = 2


def cpu_seconds(pid: int, workers: int = 1) -> float:
    """User + system CPU time of process ``pid`` and, with several workers, of its children (Linux /proc)."""
    pids = [pid]
    if workers > 1:
        children = Path(f"/proc/{pid}/task/{pid}/children")
        pids += [int(p) for p in children.read_text().split()] if children.exists() else []
    total = 0.0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def simulated_gateway(folder: Path, key: ec.EllipticCurvePrivateKey) -> tuple[Callable[[bytes], Evidence], Policy]:
    """A simulated platform running a small enclave: a function making evidence that binds ``key`` and a nonce,
    and a policy accepting that enclave on that platform."""
    platform = SimPlatform(folder)
    image = EnclaveImage(size=0x4000, ssa_frame_size=1,
                         pages=(Page(0, 0x203, b"bench enclave".ljust(4096, b"\0")), Page(0x1000, 0x201, bytes(4096))))
    sigstruct = Sigstruct.build(enclave_hash=image.mrenclave(), isv_prod_id=1, isv_svn=1,
                                attributes=Attributes(0x4, 0x3),
                                attribute_mask=Attributes(0xFF00FFFFFFFFFFFD, 0xFFFFFFFFFFFFFF1B),
                                release=False).sign(generate_signing_key())
    rt = platform.launch(image, sigstruct)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def evidence(nonce: bytes) -> Evidence:
        quote = rt.get_quote(rt.create_report(rt.qe_target_info(), bind_key(key.public_key(), nonce)))
        return Evidence("simulated", quote, pem, nonce, {}, json.loads(build_collateral(platform.store).to_json()))

    policy = Policy(mrenclaves=frozenset({rt.identity.mrenclave}),
                    roots=(TrustRoot.from_der(platform.store.pki.root_der(), "sim"),))
    return evidence, policy


@dataclass(frozen=True)
class Round:
    """One round of posting: wall time, and the server's and this process's CPU time, in seconds."""

    wall: float
    server_cpu: float
    client_cpu: float


def post_round(url: str, pid: int, workers: int, signed: list[SignedReading], batch_size: int) -> Round | None:
    """Post ``signed`` in batches of ``batch_size`` over :data:`CONNECTIONS` keep-alive connections; None (after
    saying why) unless every reading was stored."""
    # Bodies are encoded before the clock starts, and several client connections keep the one worker busy: what
    # is measured is the service, not this process's JSON encoding or its round-trip gaps.
    bodies = [json.dumps({"readings": [s.to_dict() for s in signed[i:i + batch_size]]}).encode()
              for i in range(0, len(signed), batch_size)]
    stored_by_thread = [0] * CONNECTIONS
    host, port = url.removeprefix("http://").split(":")

    def send(part: list[bytes], slot: int) -> None:
        # A bare HTTP/1.1 keep-alive client on a socket: an HTTP library would spend more of the two CPUs this
        # process shares with the service than the service spends parsing the same requests.
        with socket.create_connection((host, int(port))) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            stream = sock.makefile("rb")
            for body in part:
                sock.sendall(b"POST /v1/readings HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (host.encode(), len(body), body))
                status = stream.readline().split(b" ", 2)
                length = 0
                while (line := stream.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                answer = json.loads(stream.read(length))
                if status[1] != b"200":
                    raise RuntimeError(f"POST /v1/readings answered {status[1].decode()}: {answer}")
                stored_by_thread[slot] += answer["stored"]

    threads = [threading.Thread(target=send, args=(bodies[k::CONNECTIONS], k)) for k in range(CONNECTIONS)]
    start, cpu_start, client_cpu_start = time.perf_counter(), cpu_seconds(pid, workers), time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    measured = Round(wall, cpu_seconds(pid, workers) - cpu_start, time.process_time() - client_cpu_start)
    if sum(stored_by_thread) != len(signed):
        print(f"only {sum(stored_by_thread)} of {len(signed)} readings were stored")
        return None
    return measured


def main() -> int:
    workers = int(sys.argv[sys.argv.index("--workers") + 1]) if "--workers" in sys.argv else 1
    print(f"sgx-iot cloud serve --workers {workers}")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "cloud"
        home.mkdir()
        key = ec.generate_private_key(ec.SECP256R1())
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        make_evidence, policy = simulated_gateway(Path(tmp) / "platform", key)
        (home / "policy.toml").write_text(policy.to_toml())
        server = subprocess.Popen(
            [sys.executable, "-c", "from sgx_iot.cli.main import main; main()", "cloud", "serve", "--home", str(home),
             "--port", str(port), "--workers", str(workers)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            client = httpx.Client(base_url=url, timeout=60)
            deadline = time.monotonic() + 30
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    print("the cloud service did not start:", server.stderr.read().decode() if server.stderr else "")
                    return 1
                time.sleep(0.1)
            nonce = bytes.fromhex(client.post("/v1/challenges").json()["nonce"])
            r = client.post("/v1/gateways", json={"name": "bench-gw", "evidence": make_evidence(nonce).to_dict()})
            if r.status_code != 201:
                print("registration refused:", r.text)
                return 1

            seq = 0
            print(f"{'batch':>5}  {'readings/s (HTTP)':>18}  {'verify/s (raw)':>15}  {'ratio':>6}  {'median':>6}  "
                  f"{'CPU ratio':>10}  {'server cores':>12}  {'client cores':>12}")
            public = key.public_key()
            for batch_size, per_round in PLAN.items():
                rounds: list[tuple[Round, float, float]] = []  # (HTTP round, raw seconds, raw CPU seconds)
                for _ in range(ROUNDS):
                    readings = [Reading("bench-gw", seq + i, 1_700_000_000 + seq + i, PAYLOAD)
                                for i in range(per_round)]
                    seq += per_round
                    signed = [SignedReading(rd, sign_reading(rd, key)) for rd in readings]
                    measured = post_round(url, server.pid, workers, signed, batch_size)
                    if measured is None:
                        return 1
                    start, cpu_start = time.perf_counter(), time.process_time()
                    for s in signed:
                        verify_reading(s.reading, s.signature, public)
                    rounds.append((measured, time.perf_counter() - start, time.process_time() - cpu_start))
                best = min(rounds, key=lambda r: r[0].wall)[0]
                raw_best = min(r[1] for r in rounds)
                median_ratio = statistics.median(r[1] for r in rounds) / statistics.median(r[0].wall for r in rounds)
                cpu_ratio = sum(r[2] for r in rounds) / sum(r[0].server_cpu for r in rounds)
                print(f"{batch_size:>5}  {per_round / best.wall:>18.0f}  {per_round / raw_best:>15.0f}  "
                      f"{raw_best / best.wall:>6.2f}  {median_ratio:>6.2f}  {cpu_ratio:>10.2f}  "
                      f"{best.server_cpu / best.wall:>12.2f}  {best.client_cpu / best.wall:>12.2f}")
            client.close()
        finally:
            server.terminate()
            server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
