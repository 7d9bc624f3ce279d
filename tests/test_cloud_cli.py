"""`sgx-iot verify evidence`, `sgx-iot cloud init` and `sgx-iot cloud serve` (a real process, two workers)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from _cloud_helpers import SimWorld, make_world
from typer.testing import CliRunner

from sgx_iot.cli.main import app
from sgx_iot.verify.policy import Policy

runner = CliRunner()
NONCE = bytes(range(32))


@pytest.fixture
def world(tmp_path: Path) -> SimWorld:
    return make_world(tmp_path / "platform")


@pytest.fixture
def files(tmp_path: Path, world: SimWorld) -> Path:
    (tmp_path / "evidence.json").write_text(world.evidence(NONCE).to_json())
    (tmp_path / "policy.toml").write_text(world.policy().to_toml())
    return tmp_path


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_verify_evidence_affirming(files: Path) -> None:
    code, out = run("verify", "evidence", str(files / "evidence.json"), "--policy", str(files / "policy.toml"),
                    "--nonce", NONCE.hex())
    assert code == 0, out
    assert "AFFIRMING" in out and "simulated" in out
    code, out = run("verify", "evidence", str(files / "evidence.json"), "--policy", str(files / "policy.toml"),
                    "--json")
    doc = json.loads(out)
    assert code == 0 and doc["affirming"] is True and doc["code"] is None
    assert [c["name"] for c in doc["checks"]][-2:] == ["key_binding", "nonce"]


def test_verify_evidence_refused_exit_1(files: Path, world: SimWorld) -> None:
    code, out = run("verify", "evidence", str(files / "evidence.json"), "--policy", str(files / "policy.toml"),
                    "--nonce", "00" * 32, "--json")
    assert code == 1 and json.loads(out)["code"] == "NONCE_MISMATCH"
    (files / "strict.toml").write_text(world.policy(mrenclaves=frozenset({bytes(32)})).to_toml())
    code, out = run("verify", "evidence", str(files / "evidence.json"), "--policy", str(files / "strict.toml"))
    assert code == 1 and "MRENCLAVE_NOT_ALLOWED" in out


def test_verify_evidence_collateral_file(files: Path, world: SimWorld) -> None:
    (files / "bare.json").write_text(world.evidence(NONCE, with_collateral=False).to_json())
    (files / "collateral.json").write_text(json.dumps(world.collateral()))
    base = ["verify", "evidence", str(files / "bare.json"), "--policy", str(files / "policy.toml"), "--json"]
    code, out = run(*base)
    assert code == 1 and json.loads(out)["code"] == "COLLATERAL_MISSING"
    code, out = run(*base, "--collateral", str(files / "collateral.json"))
    assert code == 0, out


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"evidence": "missing.json"}, "does not exist"),
        ({"policy": "missing.toml"}, "does not exist"),
        ({"policy_text": "[tcb]\nfoo = 1\n"}, "policy.tcb.foo"),
        ({"evidence_text": "{}"}, "evidence."),
        ({"extra": ["--nonce", "zz"]}, "not hexadecimal"),
        ({"extra": ["--collateral", "c.json", "--pccs", "http://127.0.0.1:1"]}, "not both"),
    ],
)
def test_verify_evidence_bad_input_exit_2(files: Path, change: dict, words: str) -> None:
    evidence = files / change.get("evidence", "evidence.json")
    policy = files / change.get("policy", "policy.toml")
    if "policy_text" in change:
        policy = files / "bad.toml"
        policy.write_text(change["policy_text"])
    if "evidence_text" in change:
        evidence = files / "bad.json"
        evidence.write_text(change["evidence_text"])
    code, out = run("verify", "evidence", str(evidence), "--policy", str(policy), *change.get("extra", []))
    assert code == 2, out
    assert words in " ".join(out.split())


def test_verify_evidence_dcap_qvl_sample(vectors: Path, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from sgx_iot.verify.evidence import Evidence

    sample = vectors / "dcap" / "dcap-qvl-sample"
    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    (tmp_path / "ev.json").write_text(Evidence("gramine", (sample / "sgx_quote").read_bytes(), pem, NONCE).to_json())
    (tmp_path / "p.toml").write_text(
        '[enclave]\nmrenclave = ["33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"]\n')
    code, out = run("verify", "evidence", str(tmp_path / "ev.json"), "--policy", str(tmp_path / "p.toml"),
                    "--collateral", str(sample / "sgx_quote_collateral.json"), "--now", "1752919277", "--json")
    assert code == 1 and json.loads(out)["code"] == "TCB_STATUS_NOT_ACCEPTED"


def test_cloud_init(tmp_path: Path, world: SimWorld) -> None:
    (tmp_path / "root.der").write_bytes(world.root_der)
    home = tmp_path / "home"
    code, out = run("cloud", "init", "--home", str(home), "--mrenclave", world.mrenclave.hex(), "--trust-root",
                    str(tmp_path / "root.der"), "--json")
    assert code == 0, out
    created = json.loads(out)
    policy = Policy.load(home / "policy.toml")
    assert created["policy_id"] == policy.id and policy.mrenclaves == {world.mrenclave}
    assert (home / "verifier-key.pem").is_file() and (home / "cloud.db").is_file()
    code, out = run("cloud", "init", "--home", str(home), "--mrenclave", world.mrenclave.hex())
    assert code == 2 and "--force" in out
    code, out = run("cloud", "init", "--home", str(tmp_path / "h2"))
    assert code == 2 and "no reference values" in out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cloud_serve_process_with_two_workers(tmp_path: Path, world: SimWorld) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "policy.toml").write_text(world.policy().to_toml())
    (tmp_path / "token").write_text("an-admin-token-for-the-test\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SGX_IOT_CLOUD")}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from sgx_iot.cli.main import main; main()", "cloud", "serve", "--home", str(home),
         "--port", str(port), "--workers", "2", "--admin-token-file", str(tmp_path / "token")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.2)
        nonce = bytes.fromhex(client.post("/v1/challenges").json()["nonce"])
        r = client.post("/v1/gateways", json={"name": "gw", "evidence": world.evidence(nonce).to_dict()})
        assert r.status_code == 201, r.text
        r = client.post("/v1/gateways/gw/revoke", headers={"Authorization": "Bearer an-admin-token-for-the-test"})
        assert r.status_code == 200 and r.json()["status"] == "revoked"
        client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_cloud_serve_without_policy_exit_2(tmp_path: Path) -> None:
    code, out = run("cloud", "serve", "--home", str(tmp_path))
    assert code == 2 and "no appraisal policy" in out
