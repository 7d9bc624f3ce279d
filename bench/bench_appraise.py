"""Appraisal latency with collateral already loaded (cached), as a ratio to a bare ``dcap_qvl`` verification of
the same quote measured in the same run.

* sim: a quote from the simulated platform, ``appraise`` (every check, affirming) vs ``dcap_qvl.verify_with_root_ca``.
* real: the dcap-qvl sample quote under Intel's root (needs the vectors; ``appraise`` then runs every check too,
  refusing only the key binding) vs ``dcap_qvl.verify``.

About 10 s.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dcap_qvl
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot.platform.sim import SimPlatform, build_collateral
from sgx_iot.sgx.attributes import Attributes
from sgx_iot.sgx.keybinding import bind_key
from sgx_iot.sgx.measure import EnclaveImage, Page
from sgx_iot.sgx.sigstruct import Sigstruct, generate_signing_key
from sgx_iot.verify.appraise import appraise, expect_nonce
from sgx_iot.verify.collateral import FixedCollateral
from sgx_iot.verify.evidence import Evidence
from sgx_iot.verify.policy import Policy, TrustRoot

NONCE = bytes(range(32))


def per_call(func: Callable[[], object], seconds: float = 2.0) -> float:
    """Mean seconds per call over about ``seconds`` (after a warm-up call)."""
    func()
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        func()
        count += 1
    return elapsed / count


def report(name: str, bare: float, ours: float) -> None:
    print(f"{name:5} dcap_qvl verify   {bare * 1e3:8.3f} ms  (baseline)")
    print(f"{name:5} appraise          {ours * 1e3:8.3f} ms  ratio {ours / bare:5.2f}")


def sim() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        platform = SimPlatform(Path(tmp))
        image = EnclaveImage(size=0x4000, ssa_frame_size=1, pages=(
            Page(0, 0x203, b"bench".ljust(4096, b"\0")), Page(0x1000, 0x201, bytes(4096))))
        sigstruct = Sigstruct.build(enclave_hash=image.mrenclave(), isv_prod_id=1, isv_svn=1,
                                    attributes=Attributes(0x4, 0x3),
                                    attribute_mask=Attributes(0xFF00FFFFFFFFFFFD, 0xFFFFFFFFFFFFFF1B),
                                    release=False).sign(generate_signing_key())
        rt = platform.launch(image, sigstruct)
        key = ec.generate_private_key(ec.SECP256R1()).public_key()
        quote = rt.get_quote(rt.create_report(rt.qe_target_info(), bind_key(key, NONCE)))
        pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        collateral_json = build_collateral(platform.store).to_json()
        evidence = Evidence("simulated", quote, pem, NONCE, {}, json.loads(collateral_json))
        root = platform.store.pki.root_der()
        policy = Policy(mrenclaves=frozenset({rt.identity.mrenclave}), roots=(TrustRoot.from_der(root),))
        source = FixedCollateral(collateral_json)
        now = int(time.time())
        assert appraise(evidence, policy, now=now, collateral=source).affirming
        qvl = dcap_qvl.QuoteCollateralV3.from_json(collateral_json)
        bare = per_call(lambda: dcap_qvl.verify_with_root_ca(quote, qvl, root, now))
        check = expect_nonce(NONCE)
        ours = per_call(lambda: appraise(evidence, policy, now=now, collateral=source, nonce_check=check))
        report("sim", bare, ours)


def real() -> None:
    vectors = Path(os.environ.get("SGX_IOT_VECTORS", Path(__file__).resolve().parents[2] / "shared" / "vectors"))
    sample = vectors / "dcap" / "dcap-qvl-sample"
    if not (sample / "sgx_quote").is_file():
        print(f"real  (skipped: vectors not found at {vectors}; set SGX_IOT_VECTORS)")
        return
    quote = (sample / "sgx_quote").read_bytes()
    collateral_json = (sample / "sgx_quote_collateral.json").read_text()
    now = 1752919277
    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    evidence = Evidence("gramine", quote, pem, NONCE)
    policy = Policy(mrenclaves=frozenset({bytes.fromhex(
        "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb")}),
        accepted_tcb_statuses=frozenset({"ConfigurationAndSWHardeningNeeded"}))
    source = FixedCollateral(collateral_json)
    result = appraise(evidence, policy, now=now, collateral=source)
    assert [c.code for c in result.failures] == ["KEY_BINDING_MISMATCH"], result.to_dict()
    qvl = dcap_qvl.QuoteCollateralV3.from_json(collateral_json)
    bare = per_call(lambda: dcap_qvl.verify(quote, qvl, now))
    ours = per_call(lambda: appraise(evidence, policy, now=now, collateral=source))
    report("real", bare, ours)


def main() -> int:
    sim()
    real()
    return 0


if __name__ == "__main__":
    sys.exit(main())
