"""Cost of store-and-forward on the gateway, as a ratio against a baseline measured in the same run.

Both sides send the same number of readings, in batches of 100, to the same cloud (``create_app`` on loopback,
SQLite in a temporary folder):

* baseline: readings signed in the enclave beforehand, uploaded with a bare ``httpx`` POST per batch;
* gateway: :class:`sgx_iot.gateway.delivery.Delivery` — each batch stored in the durable outbox (fsync), signed
  in the enclave (one ECALL), its signatures stored, uploaded, acknowledged (deleted, fsync).

Prints readings per second for both and the ratio (gateway / baseline). Runs in about half a minute.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _e2e_helpers import CloudServer, E2E, make_world, payloads  # noqa: E402

from sgx_iot.gateway.cloud_client import CloudClient  # noqa: E402
from sgx_iot.gateway.delivery import Delivery  # noqa: E402
from sgx_iot.gateway.outbox import Outbox  # noqa: E402
from sgx_iot.gateway.registration import require_registration  # noqa: E402
from sgx_iot.gateway.session import GatewaySession  # noqa: E402
from sgx_iot.verify.readings import Reading, SignedReading  # noqa: E402

BATCH = 100
READINGS = 3000


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        world = make_world(folder / "world")
        cloud = CloudServer(folder / "cloud", world.policy(), world.collateral()).start()
        try:
            e2e = E2E(world, folder, cloud)
            base_state = e2e.gateway("bench-baseline")
            gw_state = e2e.gateway("bench-gateway")
            # Baseline: pre-signed readings, bare HTTP uploads.
            with GatewaySession(base_state) as session:
                readings = [Reading("bench-baseline", i, 1, p) for i, p in enumerate(payloads(READINGS))]
                signatures = session.sign([r.to_bytes() for r in readings]).signatures
            signed = [SignedReading(r, s).to_dict() for r, s in zip(readings, signatures, strict=True)]
            with httpx.Client(base_url=cloud.url, timeout=60) as http:
                start = time.perf_counter()
                for i in range(0, READINGS, BATCH):
                    response = http.post("/v1/readings", json={"readings": signed[i : i + BATCH]})
                    assert response.status_code == 200 and response.json()["stored"] == len(signed[i : i + BATCH])
                baseline = time.perf_counter() - start
            # The gateway: outbox + enclave + upload + acknowledgement, batch by batch.
            registration = require_registration(gw_state)
            with Outbox.in_folder(gw_state.folder) as outbox, CloudClient(cloud.url) as client, \
                    GatewaySession(gw_state) as session:  # fmt: skip
                delivery = Delivery(outbox, session, client, registration.name, key_sha256=registration.key_sha256,
                                    batch=BATCH)  # fmt: skip
                data = payloads(READINGS)
                start = time.perf_counter()
                for i in range(0, READINGS, BATCH):
                    report = delivery.send(data[i : i + BATCH])
                    assert report.stored == len(data[i : i + BATCH]) and report.pending == 0
                gateway = time.perf_counter() - start
        finally:
            cloud.stop()
    print(f"{READINGS} readings in batches of {BATCH}")
    print(f"  baseline (pre-signed, bare HTTP)          {READINGS / baseline:8.0f} readings/s")
    print(f"  gateway (outbox + enclave + upload + ack)  {READINGS / gateway:8.0f} readings/s")
    print(f"  ratio gateway/baseline                     {baseline / gateway:8.2f}")


if __name__ == "__main__":
    main()
