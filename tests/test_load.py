"""A bounded load test on loopback (small size; bench/bench_load.py runs the full size): gateways register by
attestation and upload batches concurrently against a real ``sgx-iot cloud serve`` process. Afterwards the database
holds exactly the expected rows (count and content), no request got a 5xx, and latency percentiles are printed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _cloud_helpers import SimWorld, make_world
from _load import presign, run_load

pytestmark = pytest.mark.slow

GATEWAYS = int(os.environ.get("SGX_IOT_LOAD_GATEWAYS", "8"))
READINGS = int(os.environ.get("SGX_IOT_LOAD_READINGS", "150"))
BATCH = 50


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> SimWorld:
    return make_world(tmp_path_factory.mktemp("platform"))


def test_concurrent_gateways_store_exactly_what_they_sent(tmp_path: Path, world: SimWorld,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    report = run_load(tmp_path, world, presign(world, GATEWAYS, READINGS), batch=BATCH, timeout=120)
    with capsys.disabled():
        print("\n" + "\n".join("load: " + line for line in report.lines()))
    assert report.errors == []
    assert report.server_errors() == 0
    assert set(report.registrations.statuses) == {201} and len(report.registrations.statuses) == GATEWAYS
    assert set(report.uploads.statuses) == {200}
    assert report.gateway_rows == GATEWAYS
    assert report.duplicate_rows == 0
    assert len(report.held) == GATEWAYS * READINGS
    assert report.held == report.expected  # content: timestamp, payload and signature of every reading
