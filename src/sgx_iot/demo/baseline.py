"""``sgx-iot demo --baseline``: the seed's OpenSSL baseline (``run_demo_openssl.sh``), and why the cloud refuses it.

The baseline keeps a P-256 private key in a file on disk — no enclave, no sealing — and signs ``Sensor_Data``
with it; ``openssl dgst -sha256 -verify`` accepts the signature. The seed left "registering the public key with
the server" as an exercise: here the cloud (the real service, with a policy holding the audited MRENCLAVE) is
asked to register that key, and refuses, because nothing proves the key lives in an audited enclave. Readings
signed with it are refused too.

:func:`run_baseline` returns a :class:`~sgx_iot.demo.result.DemoResult`, truthy when every expected refusal
happened.
"""

from __future__ import annotations

import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot._fs import atomic_write, atomic_write_text
from sgx_iot.audit import reference_values, write_reference
from sgx_iot.demo._openssl import openssl_command, verify_file_signature
from sgx_iot.demo._workspace import workspace
from sgx_iot.demo.flow import DEMO_ERRORS
from sgx_iot.demo.result import DemoResult, PlannedStep, Reporter, SilentReporter, StepRecorder
from sgx_iot.demo.sample import sample_bytes, write_sample
from sgx_iot.demo.services import RunningCloud, running_cloud
from sgx_iot.enclave.image import installed_source_root
from sgx_iot.gateway.cloud_client import CloudClient, CloudRefusal
from sgx_iot.gateway.state import public_key_pem
from sgx_iot.verify.evidence import Evidence
from sgx_iot.verify.policy import Policy
from sgx_iot.verify.readings import Reading, SignedReading, sign_reading

GATEWAY = "openssl-baseline"

POLICY_BASE = """\
# Appraisal policy of the baseline's cloud: Intel's SGX root (built in) and the audited enclave, nothing else.
[trust]
intel = true

[tcb]
accepted_statuses = ["UpToDate", "SWHardeningNeeded"]
allow_debug = false
"""

PLAN = (
    PlannedStep("key", "P-256 key on disk", "private key in a PEM file, outside any enclave"),
    PlannedStep("sign_file", "Sensor_Data signed with it", "signature verifies (openssl dgst -sha256)"),
    PlannedStep("cloud", "Cloud started", "healthy on 127.0.0.1 with the audited policy"),
    PlannedStep("register", "Register the unattested key", "refused: QUOTE_INVALID (no quote proves the key)"),
    PlannedStep("upload", "Upload a reading signed by it", "refused: UNKNOWN_GATEWAY"),
    PlannedStep("unchanged", "Nothing registered or stored", "no gateway, no reading"),
)


def run_baseline(workdir: Path | None = None, *, keep: bool = False, reporter: Reporter | None = None) -> DemoResult:
    """Run the OpenSSL baseline in ``workdir`` (default: a temporary folder, removed afterwards unless ``keep``)."""
    recorder = StepRecorder(PLAN, reporter or SilentReporter())
    with workspace(workdir, keep) as (folder, kept):
        error = None
        try:
            _baseline(folder, recorder)
        except DEMO_ERRORS as exc:
            error = f"{type(exc).__name__}: {exc}"
            recorder.fail_pending(error)
            recorder.reporter.note(f"The baseline stopped: {error}")
        return recorder.result("baseline", folder, kept, error)


def _baseline(folder: Path, rec: StepRecorder) -> None:
    out = rec.reporter
    out.section("1. OpenSSL baseline: a key on disk",
                "What the seed's run_demo_openssl.sh did: a P-256 key pair in PEM files, no enclave.")
    key_path, public_path = folder / "secp256r1-key.pem", folder / "secp256r1.pem"
    key = ec.generate_private_key(ec.SECP256R1())
    atomic_write(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()), mode=0o600)  # fmt: skip
    atomic_write(public_path, public_key_pem(key.public_key()).encode("ascii"), mode=0o644)
    out.fact("private key", f"{key_path} (in the clear: any process of this user, or a copy of the disk, has it)")
    out.fact("public key", str(public_path))
    loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    rec.record("key", isinstance(loaded, ec.EllipticCurvePrivateKey), f"{key_path.name}, unsealed PEM on disk")

    data = write_sample(folder)
    signature = folder / "Sensor_Data.signature"
    atomic_write(signature, key.sign(data.read_bytes(), ec.ECDSA(hashes.SHA256())), mode=0o644)
    command = openssl_command(public_path, signature, data)
    if command is not None:
        out.fact("command", " ".join(["openssl", *command[1:]]))
    verified, said = verify_file_signature(public_path, signature, data)
    rec.record("sign_file", verified, said)

    out.section("2. Cloud: auditor's reference values",
                "The cloud accepts only keys attested by the enclave built from the audited source.")
    values = reference_values(str(installed_source_root()))
    policy_path = folder / "cloud" / "policy.toml"
    atomic_write_text(policy_path, POLICY_BASE, mode=0o644)
    policy = write_reference(policy_path, values)
    out.fact("MRENCLAVE from source", values.mrenclave.hex())
    with running_cloud(policy_path.parent, policy_path) as cloud, CloudClient(cloud.url) as client:
        _cloud_step(rec, cloud, policy)
        out.section("3. Registering the unattested key",
                    "The key has no quote: no enclave generated it, so nothing can bind it to an audited MRENCLAVE.")
        challenge = client.challenge()
        evidence = Evidence("simulated", b"", public_key_pem(key.public_key()), challenge.nonce, {})
        try:
            answer = client.register(GATEWAY, evidence)
        except CloudRefusal as exc:
            rec.expect_code("register", "QUOTE_INVALID", exc.code, exc.message)
        else:
            rec.expect_code("register", "QUOTE_INVALID", None, f"registered as {answer.name}")

        out.note("Uploading Sensor_Data as a reading signed with the key on disk.")
        reading = Reading(GATEWAY, 1, int(time.time()), sample_bytes())
        verdict = client.upload([SignedReading(reading, sign_reading(reading, key))])[0]
        rec.expect_code("upload", "UNKNOWN_GATEWAY", verdict.code, verdict.message)

        gateways, rows = cloud.gateways(), cloud.readings()
        rec.record("unchanged", not gateways and not rows, f"{len(gateways)} gateways, {len(rows)} readings")


def _cloud_step(rec: StepRecorder, cloud: RunningCloud, policy: Policy) -> None:
    health = cloud.health()
    rec.reporter.fact("URL", cloud.url)
    rec.reporter.fact("policy", policy.id)
    rec.record("cloud", health.get("status") == "ok" and health.get("policy_id") == policy.id,
               f"{health.get('status')} at {cloud.url}", url=cloud.url)
