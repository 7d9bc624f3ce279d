"""Simulated platform: quotes per second and platform initialisation time.

Every figure is also given as a ratio to one raw ECDSA P-256 signature measured in the same run (the unit a quote
costs at least two of: the ISV signature and the QE report signature), so results compare across machines.

Run: ``.venv/bin/python bench/bench_sim_quote.py`` (about 10 s).
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dcap_qvl
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot.platform.sim import PlatformStore, SimPlatform, build_collateral
from sgx_iot.sgx.attributes import Attributes
from sgx_iot.sgx.measure import EnclaveImage, Page
from sgx_iot.sgx.sigstruct import Sigstruct, generate_signing_key


def median_seconds(action: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``action`` over ``repeat`` runs (after one warm-up)."""
    action()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    message = bytes(432)
    ecdsa = median_seconds(lambda: key.sign(message, ec.ECDSA(hashes.SHA256())), 2000)

    work = Path(tempfile.mkdtemp(prefix="bench-sim-"))
    counter = iter(range(10**6))
    init = median_seconds(lambda: PlatformStore.init(work / f"p{next(counter)}"), 30)
    reopen = median_seconds(lambda: SimPlatform(work / "p0"), 100)

    platform = SimPlatform(work / "p0")
    image = EnclaveImage(size=0x4000, ssa_frame_size=1, pages=(Page(0, 0x203, b"bench".ljust(4096, b"\0")),))
    sigstruct = Sigstruct.build(
        enclave_hash=image.mrenclave(), isv_prod_id=1, isv_svn=1, attributes=Attributes(0x4, 0x3),
        attribute_mask=Attributes(0xFF00FFFFFFFFFFFD, 0xFFFFFFFFFFFFFF1B), release=False,
    ).sign(generate_signing_key())  # fmt: skip
    launch = median_seconds(lambda: platform.launch(image, sigstruct), 100)
    runtime = platform.launch(image, sigstruct)
    target = runtime.qe_target_info()

    def one_quote() -> bytes:
        return runtime.get_quote(runtime.create_report(target, bytes(64)))

    quote_time = median_seconds(one_quote, 1000)
    collateral_time = median_seconds(lambda: build_collateral(platform.store), 100)

    quote = one_quote()
    collateral = dcap_qvl.QuoteCollateralV3.from_json(build_collateral(platform.store).to_json())
    root = platform.store.pki.root_der()
    now = int(time.time())
    verify_time = median_seconds(lambda: dcap_qvl.verify_with_root_ca(quote, collateral, root, now), 500)

    rows = [
        ("baseline: one ECDSA P-256 signature", ecdsa),
        ("platform initialisation (secret, 4 CA/leaf certs, keys, files)", init),
        ("open an existing platform folder", reopen),
        ("EINIT (launch, 2-page image)", launch),
        ("one quote (EREPORT + QE verify + 2 ECDSA signatures)", quote_time),
        ("issue collateral (TCB info, QE identity, 2 CRLs)", collateral_time),
        ("dcap-qvl verify of a simulated quote", verify_time),
    ]
    print(f"{'operation':66} {'median':>10} {'x ECDSA sign':>13}")
    for name, seconds in rows:
        print(f"{name:66} {seconds * 1e3:8.3f}ms {seconds / ecdsa:12.1f}x")
    print(f"\nquotes per second (one thread): {1 / quote_time:,.0f}")
    print(f"platform initialisation: {init * 1e3:.1f} ms = {init / ecdsa:.0f} ECDSA signatures")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
