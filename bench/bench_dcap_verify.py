"""Cost of verifying real evidence, as ratios against baselines measured in the same run.

* DCAP: ``verify_dcap_quote`` (our parse + dcap-qvl + result) vs a bare ``dcap_qvl.verify`` call, collateral parsed.
* IAS: ``IasReport.parse`` + ``verify_ias_report`` vs one bare RSA-2048 PKCS#1 v1.5 verification of the body.

Needs the real vectors (``../shared/vectors`` or ``$SGX_IOT_VECTORS``). Runs in a few seconds.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import dcap_qvl
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sgx_iot.verify.dcap import load_collateral, verify_dcap_quote
from sgx_iot.verify.ias import IasReport, verify_ias_report

NOW = 1752919277


def per_call(func: Callable[[], object], seconds: float = 2.0) -> float:
    """Mean seconds per call over about ``seconds`` of repetition (after a warm-up call)."""
    func()
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        func()
        count += 1
    return elapsed / count


def main() -> int:
    vectors = Path(os.environ.get("SGX_IOT_VECTORS", Path(__file__).resolve().parents[2] / "shared" / "vectors"))
    if not (vectors / "README.md").is_file():
        print(f"real vectors not found at {vectors}; set SGX_IOT_VECTORS")
        return 2

    sample = vectors / "dcap/dcap-qvl-sample"
    quote = (sample / "sgx_quote").read_bytes()
    collateral = load_collateral((sample / "sgx_quote_collateral.json").read_bytes())
    bare = per_call(lambda: dcap_qvl.verify(quote, collateral, NOW))
    ours = per_call(lambda: verify_dcap_quote(quote, collateral, now=NOW))
    print(f"DCAP  dcap_qvl.verify            {bare * 1e3:8.3f} ms  (baseline)")
    print(f"DCAP  verify_dcap_quote          {ours * 1e3:8.3f} ms  ratio {ours / bare:5.2f}")

    gateway = vectors / "ias/iot-gateway-2021-06"
    stored = (gateway / "ias_report.json").read_bytes()
    body = (gateway / "ias_response_body.exact.json").read_bytes()
    headers = json.loads((gateway / "ias_response_headers.extracted.json").read_bytes())
    chain = urllib.parse.unquote(headers["X-IASReport-Signing-Certificate"]).encode()
    leaf = x509.load_pem_x509_certificates(chain)[0]
    signature = base64.b64decode(headers["X-IASReport-Signature"])
    key = leaf.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    rsa_only = per_call(lambda: key.verify(signature, body, padding.PKCS1v15(), hashes.SHA256()))
    full = per_call(lambda: verify_ias_report(IasReport.parse(stored)))
    print(f"IAS   bare RSA-2048 verify       {rsa_only * 1e3:8.3f} ms  (baseline)")
    print(f"IAS   parse + verify_ias_report  {full * 1e3:8.3f} ms  ratio {full / rsa_only:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
