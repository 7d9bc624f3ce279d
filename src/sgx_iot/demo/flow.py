"""``sgx-iot demo``: the whole flow on embedded defaults, in a temporary folder, on the SIMULATED platform.

What the seed's ``run_demo_sgxra.sh`` did with an SGX machine, Intel's attestation service and docker, done here
with the project's own library functions (the ones the CLI commands call):

1. create a simulated SGX platform (its own root CA, PCCS-style collateral service on loopback);
2. the enclave author generates an RSA-3072 signing key and signs sgx-iot's enclave (SIGSTRUCT);
3. the auditor rebuilds MRENCLAVE from the source tree, checks it against the SIGSTRUCT and writes the reference
   values into the cloud's policy, which trusts the simulated root explicitly;
4. the cloud starts on a free loopback port (SQLite in the demo folder);
5. the gateway generates and seals its P-256 key inside the enclave;
6. it registers: challenge → quote (REPORTDATA binds key and nonce) → appraisal → EAR token;
7. it signs ``Sensor_Data`` in the enclave (``openssl dgst -sha256 -verify`` accepts the signature) and
   uploads it as one signed reading, as ``sgx-iot gateway send`` does; the cloud verifies and stores it;
8. then what is refused, each with its code: a swapped public key, a replayed nonce, a modified reading, a
   replayed sequence number, and an enclave rebuilt from modified source (at EINIT, and at the cloud).

:func:`run_demo` returns a :class:`~sgx_iot.demo.result.DemoResult`: every step with its expected and actual
outcome; it is truthy only when every expected outcome happened.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sgx_iot._fs import atomic_write, atomic_write_text
from sgx_iot.audit import reference_values, write_reference
from sgx_iot.demo._openssl import openssl_command, verify_file_signature
from sgx_iot.demo._workspace import workspace
from sgx_iot.demo.result import DemoResult, PlannedStep, Reporter, SilentReporter, StepRecorder
from sgx_iot.demo.sample import sample_bytes, write_sample
from sgx_iot.demo.services import RunningCloud, running_cloud
from sgx_iot.demo.tampered import MODIFICATION, enclave_evidence, launch_refusal, modified_copy
from sgx_iot.enclave.image import ENTRY, EnclaveBuild, build, installed_source_root
from sgx_iot.enclave.signing import sign_enclave, write_signing_key, write_sigstruct
from sgx_iot.errors import SgxIotError, UsageError
from sgx_iot.gateway.attestation import collect_evidence
from sgx_iot.gateway.cloud_client import CloudClient, CloudRefusal, RegisterAnswer
from sgx_iot.gateway.delivery import Delivery
from sgx_iot.gateway.outbox import Outbox
from sgx_iot.gateway.provisioning import init_gateway
from sgx_iot.gateway.registration import Registration, key_fingerprint, register, registration_path
from sgx_iot.gateway.session import GatewaySession
from sgx_iot.gateway.signing import sign_files
from sgx_iot.gateway.state import GatewayState, public_key_pem
from sgx_iot.platform.sim import PlatformStore, pccs
from sgx_iot.platform.sim.info import SIMULATED_NOTICE, platform_info, root_certificate
from sgx_iot.verify.appraise import load_p256_public_key
from sgx_iot.verify.ear import SUBMOD, jwk_public_key, verify_ear
from sgx_iot.verify.policy import INTEL_SGX_ROOT_CA_SHA256, Policy
from sgx_iot.verify.readings import Reading, SignedReading, verify_reading

GATEWAY = "greenhouse-gw"
"""The demo gateway's name at the cloud."""

POLICY_BASE = """\
# Appraisal policy of the sgx-iot demo cloud.
# The demo runs on a SIMULATED SGX platform: its root CA is trusted here only because it is listed explicitly.
[trust]
intel = true
roots = ["sim-root.pem"]

[tcb]
accepted_statuses = ["UpToDate", "SWHardeningNeeded"]
allow_debug = false

[nonce]
lifetime_seconds = 300
"""
"""The policy before the auditor adds the ``[enclave]`` reference values."""

PLAN = (
    PlannedStep("platform", "Simulated SGX platform", "created, with its own root CA (not Intel's)"),
    PlannedStep("sign_enclave", "Enclave signed", "SIGSTRUCT states the MRENCLAVE of the source tree"),
    PlannedStep("audit", "MRENCLAVE audited from source", "source reproduces the SIGSTRUCT; values in the policy"),
    PlannedStep("cloud", "Cloud started", "healthy on 127.0.0.1 with the audited policy"),
    PlannedStep("provision", "Gateway key provisioned", "P-256 key generated and sealed in the audited enclave"),
    PlannedStep("register", "Gateway registered", "quote appraised: affirming; EAR token verifies"),
    PlannedStep("sign_file", "Sensor_Data signed in the enclave", "signature verifies (openssl dgst -sha256)"),
    PlannedStep("upload", "Sensor_Data uploaded", "verified and stored as a reading"),
    PlannedStep("stored", "Stored and verified", "listed by the cloud, verifies under the attested key"),
    PlannedStep("swapped_key", "Swapped public key", "refused: KEY_BINDING_MISMATCH"),
    PlannedStep("replayed_nonce", "Replayed nonce", "refused: NONCE_UNKNOWN"),
    PlannedStep("modified_reading", "Modified reading", "refused: BAD_SIGNATURE"),
    PlannedStep("resent_reading", "Same reading sent again", "acknowledged as a duplicate, stored once"),
    PlannedStep("replayed_reading", "Replayed sequence number", "refused: REPLAYED_READING"),
    PlannedStep("tampered_einit", "Modified enclave, original SIGSTRUCT", "refused at EINIT: EINIT_MRENCLAVE_MISMATCH"),
    PlannedStep("tampered_register", "Modified enclave, re-signed", "refused: MRENCLAVE_NOT_ALLOWED"),
    PlannedStep("unchanged", "Nothing stored by the refusals", "one gateway, its attested key, one reading"),
)

DEMO_ERRORS = (SgxIotError, OSError, httpx.HTTPError, RuntimeError)
"""Failures that stop a run and are reported as its error (anything else is a bug and propagates)."""


def run_demo(workdir: Path | None = None, *, keep: bool = False, reporter: Reporter | None = None) -> DemoResult:
    """Run the whole flow in ``workdir`` (default: a temporary folder, removed afterwards unless ``keep``).

    Progress goes to ``reporter`` as it happens. Raises ``UsageError`` only for an unusable ``workdir``; anything
    that goes wrong later is in the result (failed steps, and ``error`` when the flow could not go on).
    """
    recorder = StepRecorder(PLAN, reporter or SilentReporter())
    with workspace(workdir, keep) as (folder, kept):
        error = None
        try:
            _Flow(folder, recorder).run()
        except DEMO_ERRORS as exc:
            error = f"{type(exc).__name__}: {exc}"
            recorder.fail_pending(error)
            recorder.reporter.note(f"The demo stopped: {error}")
        return recorder.result("demo", folder, kept, error)


class _Flow:
    """One run of the demo in ``folder`` (one method per section, in order)."""

    def __init__(self, folder: Path, recorder: StepRecorder) -> None:
        self.folder = folder
        self.rec = recorder
        self.out = recorder.reporter
        self.platform_dir = folder / "platform"
        self.author_dir = folder / "author"
        self.cloud_dir = folder / "cloud"
        self.gateway = GatewayState(folder / "gateway")
        self.source_root = installed_source_root()
        self.sigstruct_path = self.author_dir / "enclave.sigstruct"
        self.policy_path = self.cloud_dir / "policy.toml"

    def run(self) -> None:
        self.create_platform()
        key, enclave = self.sign_enclave()
        policy = self.audit(enclave)
        with pccs.running(self.platform_dir) as pccs_url, \
                running_cloud(self.cloud_dir, self.policy_path, pccs_url=pccs_url) as cloud, \
                CloudClient(cloud.url) as client:  # fmt: skip
            self.start_cloud(cloud, policy, pccs_url)
            self.provision(enclave)
            with GatewaySession(self.gateway) as session:
                registration, nonce = self.register(session, client, cloud)
                self.sign_file(session)
                self.upload(session, client, registration)
                stored = self.show_stored(cloud, registration)
                self.refuse_evidence(session, client, nonce)
                self.refuse_readings(session, client, stored)
            self.refuse_modified_enclave(key, enclave, client)
            self.check_unchanged(cloud, registration.key_sha256)

    # --- 1. platform -------------------------------------------------------------------------------------------

    def create_platform(self) -> None:
        self.out.section("1. Simulated SGX platform", SIMULATED_NOTICE + ".")
        store = PlatformStore.init(self.platform_dir)
        info = platform_info(store)
        root_pem = root_certificate(store, "pem")
        atomic_write(self.cloud_dir / "sim-root.pem", root_pem, mode=0o644)
        self.out.fact("folder", info["folder"])
        self.out.fact("root CA", info["root_ca"]["subject"])
        self.out.fact("root CA SHA-256", info["root_ca"]["sha256"])
        self.out.fact("TCB status", info["tcb_status"])
        own_root = info["root_ca"]["sha256"] != INTEL_SGX_ROOT_CA_SHA256
        self.rec.record("platform", info["kind"] == "simulated" and own_root,
                        f"{info['kind']}, own root CA {info['root_ca']['sha256'][:8]}…",
                        root_sha256=info["root_ca"]["sha256"])  # fmt: skip

    # --- 2. enclave author -------------------------------------------------------------------------------------

    def sign_enclave(self) -> tuple[rsa.RSAPrivateKey, EnclaveBuild]:
        self.out.section("2. Enclave author: signing key and SIGSTRUCT",
                         "An RSA-3072 (e=3) key signs the enclave measured from the source tree.")
        key = write_signing_key(self.author_dir / "enclave-signing-key.pem")
        enclave = build(self.source_root)
        sigstruct = sign_enclave(key, self.source_root, enclave=enclave)
        write_sigstruct(sigstruct, self.sigstruct_path)
        sigstruct.verify()
        self.out.fact("source tree", str(self.source_root))
        self.out.fact("MRENCLAVE", enclave.mrenclave.hex())
        self.out.fact("MRSIGNER", sigstruct.mrsigner.hex())
        self.out.fact("ISVPRODID / ISVSVN", f"{sigstruct.isv_prod_id} / {sigstruct.isv_svn}")
        self.out.fact("SIGSTRUCT", str(self.sigstruct_path))
        self.rec.record("sign_enclave", sigstruct.enclave_hash == enclave.mrenclave,
                        f"ENCLAVEHASH = MRENCLAVE {enclave.mrenclave.hex()[:8]}…",
                        mrenclave=enclave.mrenclave.hex(), mrsigner=sigstruct.mrsigner.hex())  # fmt: skip
        return key, enclave

    # --- 3. auditor --------------------------------------------------------------------------------------------

    def audit(self, enclave: EnclaveBuild) -> Policy:
        self.out.section("3. Auditor: MRENCLAVE from source into the cloud's policy",
                         "The auditor measures the enclave from the source tree, checks that the SIGSTRUCT states "
                         "the same MRENCLAVE, and publishes the reference values.")
        values = reference_values(str(self.source_root), self.sigstruct_path)
        atomic_write_text(self.policy_path, POLICY_BASE, mode=0o644)
        policy = write_reference(self.policy_path, values)
        self.out.fact("MRENCLAVE from source", values.mrenclave.hex())
        self.out.fact("MRSIGNER", values.mrsigner.hex() if values.mrsigner else "(none)")
        self.out.fact("policy", f"{self.policy_path} ({policy.id})")
        self.out.note("The policy trusts the simulated platform's root explicitly ([trust] roots = sim-root.pem).")
        ok = values.mrenclave == enclave.mrenclave and policy.mrenclaves == frozenset({enclave.mrenclave})
        self.rec.record("audit", ok, f"reproduced {values.mrenclave.hex()[:8]}…, in the policy",
                        policy_id=policy.id, mrenclave=values.mrenclave.hex())
        return policy

    # --- 4. cloud ----------------------------------------------------------------------------------------------

    def start_cloud(self, cloud: RunningCloud, policy: Policy, pccs_url: str) -> None:
        self.out.section("4. Cloud service", "The relying party: FastAPI + SQLite, on a free loopback port.")
        health = cloud.health()
        self.out.fact("URL", cloud.url)
        self.out.fact("database", cloud.settings.db_url)
        self.out.fact("collateral", f"simulated PCCS at {pccs_url}")
        self.rec.record("cloud", health.get("status") == "ok" and health.get("policy_id") == policy.id,
                        f"{health.get('status')} at {cloud.url}", url=cloud.url)

    # --- 5. gateway: provisioning ------------------------------------------------------------------------------

    def provision(self, enclave: EnclaveBuild) -> None:
        self.out.section("5. Gateway: key provisioning",
                         "Inside the enclave: generate a P-256 key pair and seal the private key; the host keeps "
                         "only the sealed blob and the public key.")
        result = init_gateway(self.gateway, sigstruct=self.sigstruct_path, platform=self.platform_dir)
        sealed = self.gateway.sealed_key()
        self.out.fact("sealed key", f"{self.gateway.sealed_key_path} ({len(sealed)} bytes, sgx_sealed_data_t)")
        self.out.fact("public key", str(self.gateway.public_key_path))
        self.out.fact("enclave MRENCLAVE", result.identity.mrenclave.hex())
        self.out.fact("platform", result.platform_kind)
        ok = result.identity.mrenclave == enclave.mrenclave and result.platform_kind == "simulated"
        self.rec.record("provision", ok, f"sealed {len(sealed)} bytes under {result.policy.upper()}",
                        key_sha256=key_fingerprint(result.public_key))

    # --- 6. registration ---------------------------------------------------------------------------------------

    def register(self, session: GatewaySession, client: CloudClient, cloud: RunningCloud) -> tuple[Registration, bytes]:
        self.out.section("6. Gateway: remote attestation and registration",
                         "The cloud hands out a nonce; the enclave binds its public key and the nonce into "
                         "REPORTDATA; the quoting enclave signs the quote; the cloud appraises it and returns an "
                         "EAR attestation-result token.")
        registration = register(self.gateway, cloud.url, GATEWAY, session=session, client=client)
        claims = verify_ear(registration.ear, cloud.verifier_key())
        nonce = _unb64url(claims["eat_nonce"])
        submod = claims["submods"][SUBMOD]
        ear_key = key_fingerprint(jwk_public_key(submod["sgx-iot.key"]))
        self.out.fact("nonce", nonce.hex())
        self.out.fact("appraisal", f"TCB {registration.tcb_status}, policy {registration.policy_id[:19]}…")
        self.out.fact("EAR status", f"{submod['ear.status']} (signature checked with GET /v1/verifier's key)")
        self.out.fact("registered key", registration.key_sha256)
        self.out.fact("registration", str(registration_path(self.gateway)))
        ok = submod["ear.status"] == "affirming" and ear_key == registration.key_sha256 == key_fingerprint(
            self.gateway.public_key())
        self.rec.record("register", ok, f"{submod['ear.status']}; EAR verified",
                        key_sha256=registration.key_sha256, ear_status=submod["ear.status"])
        return registration, nonce

    # --- 7. signing and upload ---------------------------------------------------------------------------------

    def sign_file(self, session: GatewaySession) -> None:
        self.out.section("7. Gateway: signing Sensor_Data",
                         "The enclave unseals its key and signs; the signature is DER ECDSA P-256/SHA-256, as "
                         "the seed's OpenSSL baseline wrote it.")
        data = write_sample(self.folder)
        signed = sign_files(session, [data])
        signature = signed.signatures[0]
        command = openssl_command(self.gateway.public_key_path, signature, data)
        if command is not None:
            self.out.fact("command", " ".join(["openssl", *command[1:]]))
        verified, said = verify_file_signature(self.gateway.public_key_path, signature, data)
        self.out.fact("signature", f"{signature} ({signature.stat().st_size} bytes)")
        self.rec.record("sign_file", verified, said)

    def upload(self, session: GatewaySession, client: CloudClient, registration: Registration) -> None:
        self.out.note("Uploading Sensor_Data as one reading, as `sgx-iot gateway send Sensor_Data` does: outbox "
                      "first, signed in the enclave, then sent.")
        with Outbox.in_folder(self.gateway.folder) as outbox:
            delivery = Delivery(outbox, session, client, registration.name, key_sha256=registration.key_sha256)
            report = delivery.send([sample_bytes()])
        for verdict in report.verdicts:
            self.out.fact(f"seq {verdict.seq}", f"{verdict.status}: {verdict.message}")
        ok = report.error is None and report.stored == 1 and report.pending == 0
        self.rec.record("upload", ok, f"{report.stored} stored, {report.pending} pending",
                        verdicts=[v.to_dict() for v in report.verdicts])

    def show_stored(self, cloud: RunningCloud, registration: Registration) -> SignedReading:
        self.out.section("8. Cloud: stored and verified", "GET /v1/readings, checked again here against the "
                                                          "gateway's attested key (GET /v1/gateways/NAME).")
        key = load_p256_public_key(cloud.gateway(GATEWAY)["public_key"])
        rows = cloud.readings(GATEWAY)
        stored = [_stored(row) for row in rows]
        verified = 0
        for row, item in zip(rows, stored, strict=True):
            try:
                verify_reading(item.reading, item.signature, key)
            except SgxIotError:
                continue
            verified += row["key_sha256"] == registration.key_sha256
        for item in stored:
            first = item.reading.payload.split(b"\n", 1)[0].decode("utf-8", "replace")
            self.out.fact(f"seq {item.reading.seq}", f"{first!r}… ({len(item.reading.payload)} bytes, signature "
                                                      f"{len(item.signature)} bytes)")
        ok = len(stored) == verified == 1 and stored[0].reading.payload == sample_bytes()
        self.rec.record("stored", ok, f"{len(rows)} listed, {verified} verified, content = Sensor_Data")
        if not stored:
            raise UsageError("the cloud lists no stored reading, so the refusals of readings cannot be shown")
        return stored[0]

    # --- 9. refusals: evidence ---------------------------------------------------------------------------------

    def refuse_evidence(self, session: GatewaySession, client: CloudClient, used_nonce: bytes) -> None:
        self.out.section("9. What the cloud refuses", "Each attempt below must be refused, with its code.")
        self.out.note("A host that swaps the public key: a genuine, fresh quote, but another key in the evidence.")
        challenge = client.challenge()
        genuine = collect_evidence(session, challenge.nonce)
        impostor = ec.generate_private_key(ec.SECP256R1()).public_key()
        swapped = dataclasses.replace(genuine, public_key_pem=public_key_pem(impostor))
        code, message = _refusal(lambda: client.register(GATEWAY, swapped))
        self.rec.expect_code("swapped_key", "KEY_BINDING_MISMATCH", code, message)

        self.out.note("The registration replayed: genuine evidence for the nonce already used to register.")
        replayed = collect_evidence(session, used_nonce)
        code, message = _refusal(lambda: client.register(GATEWAY, replayed))
        self.rec.expect_code("replayed_nonce", "NONCE_UNKNOWN", code, message)

    # --- 10. refusals: readings --------------------------------------------------------------------------------

    def refuse_readings(self, session: GatewaySession, client: CloudClient, stored: SignedReading) -> None:
        seq = stored.reading.seq
        payload, before, after = _modify(stored.reading.payload)
        self.out.note(f"Reading {seq} (Sensor_Data) changed in transit: {before!r} → {after!r}, signature "
                      "unchanged.")
        modified = SignedReading(dataclasses.replace(stored.reading, payload=payload), stored.signature)
        verdict = client.upload([modified])[0]
        self.rec.expect_code("modified_reading", "BAD_SIGNATURE", verdict.code, verdict.message)

        self.out.note(f"Reading {seq} sent again unchanged (e.g. a retry after a lost answer).")
        verdict = client.upload([stored])[0]
        self.rec.record("resent_reading", verdict.status == "duplicate", f"{verdict.status} (acknowledged)",
                        code=verdict.code, message=verdict.message)

        self.out.note(f"The modified Sensor_Data, this time signed by the enclave (a compromised host asks it to), "
                      f"reusing sequence number {seq} to rewrite history.")
        replay = dataclasses.replace(stored.reading, payload=payload)
        signature = session.sign([replay.to_bytes()]).signatures[0]
        verdict = client.upload([SignedReading(replay, signature)])[0]
        self.rec.expect_code("replayed_reading", "REPLAYED_READING", verdict.code, verdict.message)

    # --- 11. refusals: modified enclave ------------------------------------------------------------------------

    def refuse_modified_enclave(self, key: rsa.RSAPrivateKey, enclave: EnclaveBuild, client: CloudClient) -> None:
        self.out.note(f"The enclave rebuilt from modified source: one line appended to {ENTRY}.")
        tree = modified_copy(self.source_root, self.folder / "modified-source")
        modified = build(tree)
        self.out.fact("audited MRENCLAVE", enclave.mrenclave.hex())
        self.out.fact("modified MRENCLAVE", modified.mrenclave.hex())
        self.out.fact("added", MODIFICATION.decode().strip().splitlines()[-1])

        self.out.note("Launched with the original SIGSTRUCT: EINIT measures the image and compares.")
        code, message = launch_refusal(self.sigstruct_path, self.platform_dir, tree)
        both = enclave.mrenclave.hex() in message and modified.mrenclave.hex() in message
        actual = f"refused: {code}" if code else "launched (not refused)"
        self.rec.record("tampered_einit", code == "EINIT_MRENCLAVE_MISMATCH" and both,
                        actual + (" (both named)" if both else " (the MRENCLAVEs are not both named)"),
                        code=code, message=message)

        self.out.note("Signed again with the author's key (same MRSIGNER), launched, provisioned and attested: the "
                      "platform runs it, but the cloud's policy allows only the audited MRENCLAVE.")
        sigstruct_path = tree / "enclave.sigstruct"
        write_sigstruct(sign_enclave(key, tree, enclave=modified), sigstruct_path)
        evidence = enclave_evidence(sigstruct_path, self.platform_dir, tree, lambda: client.challenge().nonce)
        code, message = _refusal(lambda: client.register(GATEWAY, evidence))
        self.rec.expect_code("tampered_register", "MRENCLAVE_NOT_ALLOWED", code, message)

    # --- 12. nothing changed -----------------------------------------------------------------------------------

    def check_unchanged(self, cloud: RunningCloud, key_sha256: str) -> None:
        self.out.section("10. After the refusals", "The registry and the stored readings are as before.")
        gateways = cloud.gateways()
        rows = cloud.readings()
        keys = [g["key_sha256"] for g in gateways]
        self.out.fact("gateways", ", ".join(f"{g['name']} ({g['status']}, key {g['key_sha256'][:16]}…)"
                                            for g in gateways))  # fmt: skip
        self.out.fact("readings", str(len(rows)))
        ok = keys == [key_sha256] and len(rows) == 1 and _stored(rows[0]).reading.payload == sample_bytes()
        self.rec.record("unchanged", ok,
                        f"{_count(len(gateways), 'gateway')}, same key, {_count(len(rows), 'reading')}")


def _refusal(call: Callable[[], RegisterAnswer]) -> tuple[str | None, str]:
    """Run a registration; ``(code, message)`` of the cloud's refusal, or ``(None, what it said)``."""
    try:
        answer = call()
    except CloudRefusal as exc:
        return exc.code, exc.message
    return None, f"registered (key {answer.key_sha256[:16]}…)"


def _modify(payload: bytes) -> tuple[bytes, str, str]:
    """The payload with the first digit of its first line of values changed (a plausible falsified value);
    returns it with that line before and after."""
    lines = payload.split(b"\n")
    for i, line in enumerate(lines):
        if line[:1].isdigit():
            changed = bytes([0x30 + (line[0] - 0x30 + 7) % 10]) + line[1:]
            lines[i] = changed
            return b"\n".join(lines), line.decode("utf-8", "replace"), changed.decode("utf-8", "replace")
    return payload + b" (modified)", "(end)", " (modified)"


def _stored(row: dict[str, Any]) -> SignedReading:
    """A reading as ``GET /v1/readings`` lists it."""
    return SignedReading(Reading(row["gateway"], row["seq"], row["timestamp"], _b64(row["payload"])),
                         _b64(row["signature"]))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64(text: str) -> bytes:
    return base64.b64decode(text)
