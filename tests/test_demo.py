"""`sgx-iot demo` and `sgx-iot demo --baseline`, end to end, as a user runs them (a subprocess, real enclave
processes, the real cloud on loopback with SQLite, the simulated platform).

The expected refusal codes are the ones issue 5 names for each attack; the demo's own plan is not used as the
source of truth.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sgx_iot.cli.main import app
from sgx_iot.demo import run_baseline
from sgx_iot.demo.result import NOT_REACHED, DemoResult, PlannedStep, SilentReporter, Step, StepRecorder
from sgx_iot.demo.sample import SAMPLE_NAME, sample_bytes
from sgx_iot.sgx.sigstruct import Sigstruct

# What each attack of issue 5 must be refused with.
DEMO_REFUSALS = {
    "swapped_key": "KEY_BINDING_MISMATCH",
    "replayed_nonce": "NONCE_UNKNOWN",
    "modified_reading": "BAD_SIGNATURE",
    "replayed_reading": "REPLAYED_READING",
    "tampered_einit": "EINIT_MRENCLAVE_MISMATCH",
    "tampered_register": "MRENCLAVE_NOT_ALLOWED",
}
BASELINE_REFUSALS = {"register": "QUOTE_INVALID", "upload": "UNKNOWN_GATEWAY"}


def _sgx_iot(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "sgx-iot"
    command = [str(script)] if script.is_file() else [sys.executable, "-c", "from sgx_iot.cli.main import main; main()"]
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180,
                          check=False)  # fmt: skip


def test_demo_text_runs_the_whole_flow_and_ends_with_the_summary(tmp_path: Path) -> None:
    done = _sgx_iot("demo", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "SIMULATED SGX platform" in out
    assert "Summary (simulated SGX platform)" in out
    assert "All 17 expected outcomes happened" in out
    assert "✘" not in out
    for code in DEMO_REFUSALS.values():
        assert f"refused: {code}" in out
    assert "openssl: Verified OK" in out or "checked with cryptography" in out
    assert "Files kept" not in out  # the temporary folder was removed


def test_demo_json_with_workdir_reports_every_step_and_keeps_the_files(tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    done = _sgx_iot("demo", "--json", "--workdir", str(workdir), cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads(done.stdout)
    assert doc["mode"] == "demo" and doc["ok"] is True and doc["platform"] == "simulated"
    assert doc["kept"] is True and Path(doc["workdir"]) == workdir.resolve()
    steps = {s["key"]: s for s in doc["steps"]}
    assert len(steps) == len(doc["steps"]) == 17
    assert all(s["ok"] and s["actual"] != NOT_REACHED for s in doc["steps"])
    for key, code in DEMO_REFUSALS.items():
        assert steps[key]["code"] == code, steps[key]
    assert steps["resent_reading"]["code"] is None and "duplicate" in steps["resent_reading"]["actual"]
    # Sensor_Data was stored as one reading.
    assert [v["status"] for v in steps["upload"]["details"]["verdicts"]] == ["stored"]
    # The files of each role are where the demo says, and the seed-compatible signature is there.
    for rel in ("platform/platform.json", "author/enclave.sigstruct", "cloud/policy.toml", "cloud/cloud.db",
                "gateway/sealed_key.bin", "gateway/public_key.pem", "gateway/registration.json", SAMPLE_NAME,
                SAMPLE_NAME + ".sig"):
        assert (workdir / rel).is_file(), rel
    policy = (workdir / "cloud" / "policy.toml").read_text()
    signed_mrenclave = Sigstruct.parse((workdir / "author" / "enclave.sigstruct").read_bytes()).enclave_hash
    assert f'mrenclave = ["{signed_mrenclave.hex()}"]' in policy and 'roots = ["sim-root.pem"]' in policy
    if shutil.which("openssl"):
        verify = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(workdir / "gateway/public_key.pem"),
                                 "-signature", str(workdir / (SAMPLE_NAME + ".sig")), str(workdir / SAMPLE_NAME)],
                                capture_output=True, text=True, check=False)  # fmt: skip
        assert verify.returncode == 0 and "Verified OK" in verify.stdout


def test_baseline_text_and_json(tmp_path: Path) -> None:
    done = _sgx_iot("demo", "--baseline", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "OpenSSL baseline" in done.stdout and "All 6 expected outcomes happened" in done.stdout
    for code in BASELINE_REFUSALS.values():
        assert f"refused: {code}" in done.stdout

    done = _sgx_iot("demo", "--baseline", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["mode"] == "baseline" and doc["ok"] is True and doc["kept"] is False
    assert not Path(doc["workdir"]).exists()
    steps = {s["key"]: s for s in doc["steps"]}
    for key, code in BASELINE_REFUSALS.items():
        assert steps[key]["code"] == code, steps[key]


def test_baseline_keep_leaves_the_key_on_disk() -> None:
    result = run_baseline(keep=True)
    try:
        assert result.ok and result.kept
        key = result.workdir / "secp256r1-key.pem"
        assert b"PRIVATE KEY" in key.read_bytes() and key.stat().st_mode & 0o777 == 0o600
        assert (result.workdir / "Sensor_Data.signature").is_file()
    finally:
        shutil.rmtree(result.workdir)


def test_workdir_must_be_empty(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    done = _sgx_iot("demo", "--baseline", "--workdir", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2
    assert "must be an empty folder" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["something"]


def test_a_failed_or_missing_outcome_makes_the_demo_fail(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    plan = [PlannedStep("a", "first", "refused: X"), PlannedStep("b", "second", "stored")]
    recorder = StepRecorder(plan, SilentReporter())
    recorder.expect_code("a", "X", "Y", "refused for another reason")
    result = recorder.result("demo", tmp_path, kept=False)
    assert not result.ok and [s.key for s in result.failures()] == ["a", "b"]
    assert result.steps[0].actual == "refused: Y" and result.steps[0].details["message"] == "refused for another reason"
    assert result.steps[1] == Step("b", "second", "stored") and not result.steps[1].reached

    broken = StepRecorder(plan, SilentReporter())
    broken.record("a", True, "refused: X")
    assert broken.fail_pending("OSError: disk full") is not None
    assert broken.fail_pending("again") is None  # nothing left to fail
    steps = broken.result("demo", tmp_path, kept=False).steps
    assert steps[0].ok and not steps[1].ok and steps[1].actual == "failed: OSError: disk full"

    accepted = StepRecorder(plan[:1], SilentReporter())
    accepted.expect_code("a", "X", None)
    assert accepted.result("demo", tmp_path, kept=False).steps[0].actual == "accepted (not refused)"

    def failing(*_: object, **__: object) -> DemoResult:
        return result

    monkeypatch.setattr("sgx_iot.demo.run_demo", failing)
    run = CliRunner().invoke(app, ["demo"])
    assert run.exit_code == 1
    assert "✘" in run.output and "2 of 2 expected outcomes did not happen" in run.output


def test_the_packaged_sample() -> None:
    data = sample_bytes()
    lines = data.decode("ascii").splitlines()
    # The seed's shape: a header, a start marker, rows of values, an end marker; a small text file.
    assert 150 <= len(data) <= 300 and data.endswith(b"\n") and len(lines) >= 5
    assert all(line.split()[0].replace(".", "").isdigit() for line in lines[2:-1])
