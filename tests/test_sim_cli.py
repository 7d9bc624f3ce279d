"""`sgx-iot sim …` commands: exit codes, files they write, and a real `sim pccs` process."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import dcap_qvl
import httpx
import pytest
from cryptography import x509
from typer.testing import CliRunner

from _sim_helpers import fetch_collateral, launch, quote_for, verify
from sgx_iot.cli.sim import app
from sgx_iot.platform.sim import SimPlatform

runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.output


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "platform"


def test_init_info_and_json(folder: Path) -> None:
    code, out = run("init", "--platform", str(folder), "--tcb-status", "SWHardeningNeeded",
                    "--advisory", "INTEL-SA-00615")  # fmt: skip
    assert code == 0 and "SIMULATED" in out and "SWHardeningNeeded" in out
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    code, out = run("info", "--platform", str(folder), "--json")
    info = json.loads(out)
    assert code == 0 and info["kind"] == "simulated" and "SIMULATED" in info["notice"]
    assert info["tcb_status"] == "SWHardeningNeeded" and info["advisories"] == ["INTEL-SA-00615"]
    root = x509.load_pem_x509_certificate((folder / "root-ca.pem").read_bytes())
    assert info["root_ca"]["sha256"] == root.fingerprint(root.signature_hash_algorithm).hex()  # type: ignore[arg-type]
    for key in ("cpu_svn", "fmspc", "ppid", "pce_svn"):
        assert key in info
    code, out = run("info", "--platform", str(folder))
    assert code == 0 and info["root_ca"]["sha256"] in out and info["ppid"] in out


def test_init_again_keeps_the_platform(folder: Path) -> None:
    run("init", "--platform", str(folder))
    secret = (folder / "platform-secret.bin").read_bytes()
    code, out = run("init", "--platform", str(folder), "--json")
    assert code == 0 and json.loads(out)["newly_created"] is False
    assert (folder / "platform-secret.bin").read_bytes() == secret
    run("set-tcb", "OutOfDate", "--platform", str(folder))
    assert json.loads(run("init", "--platform", str(folder), "--json")[1])["tcb_status"] == "OutOfDate"
    code, out = run("init", "--platform", str(folder), "--tcb-status", "SWHardeningNeeded", "--json")
    assert code == 0 and json.loads(out)["tcb_status"] == "SWHardeningNeeded"
    code, _ = run("init", "--platform", str(folder), "--force")
    assert code == 0 and (folder / "platform-secret.bin").read_bytes() != secret


def test_environment_variable_selects_the_folder(folder: Path) -> None:
    result = runner.invoke(app, ["info", "--json"], env={"SGX_IOT_PLATFORM": str(folder)})
    assert result.exit_code == 0 and json.loads(result.output)["folder"] == str(folder)


def test_collateral_file_verifies_quotes(folder: Path, tmp_path: Path) -> None:
    platform = SimPlatform(folder)
    quote = quote_for(launch(platform))
    for status in ("OutOfDate", "ConfigurationNeeded"):
        code, _ = run("set-tcb", status, "--advisory", "INTEL-SA-00289", "--platform", str(folder))
        assert code == 0
        out = tmp_path / f"{status}.json"
        code, text = run("collateral", "--out", str(out), "--platform", str(folder))
        assert code == 0 and "SIMULATED" in text
        collateral = dcap_qvl.QuoteCollateralV3.from_json(out.read_text())
        root_file = tmp_path / "root.der"
        assert run("root", "--out", str(root_file), "--platform", str(folder))[0] == 0
        report = verify(quote, collateral, root_file.read_bytes())
        assert (report.status, report.advisory_ids) == (status, ["INTEL-SA-00289"])


def test_revoke_pck_and_undo(folder: Path, tmp_path: Path) -> None:
    platform = SimPlatform(folder)
    quote = quote_for(launch(platform))
    out = tmp_path / "c.json"
    assert run("revoke-pck", "--platform", str(folder))[0] == 0
    run("collateral", "--out", str(out), "--platform", str(folder))
    with pytest.raises(ValueError):
        verify(quote, dcap_qvl.QuoteCollateralV3.from_json(out.read_text()), platform.store.pki.root_der())
    assert run("revoke-pck", "--undo", "--platform", str(folder))[0] == 0
    run("collateral", "--out", str(out), "--platform", str(folder))
    verify(quote, dcap_qvl.QuoteCollateralV3.from_json(out.read_text()), platform.store.pki.root_der())


def test_root_export_formats(folder: Path, tmp_path: Path) -> None:
    der_file, pem_file, forced = tmp_path / "r.der", tmp_path / "r.pem", tmp_path / "root.bin"
    assert run("root", "--out", str(der_file), "--platform", str(folder))[0] == 0
    assert run("root", "--out", str(pem_file), "--platform", str(folder))[0] == 0
    assert run("root", "--out", str(forced), "--format", "der", "--platform", str(folder))[0] == 0
    der = x509.load_der_x509_certificate(der_file.read_bytes())
    assert x509.load_pem_x509_certificate(pem_file.read_bytes()) == der
    assert forced.read_bytes() == der_file.read_bytes()
    assert "SIMULATED" in der.subject.rfc4514_string()
    code, out = run("root", "--out", str(forced), "--format", "jks", "--platform", str(folder))
    assert code == 2 and "pem or der" in out


@pytest.mark.parametrize(
    "args",
    [
        ["set-tcb", "Great"],
        ["set-tcb", "OutOfDate", "--advisory", "not valid!"],
        ["init", "--tcb-status", "Nope"],
        ["pccs", "--host", "0.0.0.0"],
    ],
)
def test_bad_usage_exits_2(folder: Path, args: list[str]) -> None:
    code, out = run(*args, "--platform", str(folder))
    assert code == 2 and "error" in out


def test_corrupt_platform_exits_2(folder: Path) -> None:
    run("init", "--platform", str(folder))
    (folder / "platform.json").write_text("{not json")
    code, out = run("info", "--platform", str(folder))
    assert code == 2 and "platform.json" in out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_pccs_command_serves_collateral(folder: Path) -> None:
    """`sgx-iot sim pccs` as a real process (uvicorn), fetched by dcap-qvl."""
    platform = SimPlatform(folder)
    quote = quote_for(launch(platform))
    port = _free_port()
    env = {**os.environ, "SGX_IOT_PLATFORM": str(folder)}
    process = subprocess.Popen(
        [sys.executable, "-c", "from sgx_iot.cli.main import main; main()", "sim", "pccs", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            assert time.monotonic() < deadline, "sgx-iot sim pccs did not start"
            time.sleep(0.1)
        report = verify(quote, fetch_collateral(url, quote), platform.store.pki.root_der())
        assert report.status == "UpToDate"
    finally:
        process.terminate()
        process.wait(timeout=10)
