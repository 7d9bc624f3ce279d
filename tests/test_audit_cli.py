"""`sgx-iot audit verify` / `sgx-iot audit reference`: output and exit codes (0 match, 1 mismatch, 2 bad input)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from _vector_helpers import MARKUP, report_with_markup
from elftools.elf.elffile import ELFFile
from typer.testing import CliRunner

from sgx_iot.cli.main import app
from sgx_iot.enclave.image import installed_source_root
from sgx_iot.verify.policy import Policy

runner = CliRunner()
BAZINGA_MRENCLAVE = "d17c8e8a6cb4629e581865693d12a25f3bb0072dfd7b5cb1d12df7f850fdf0f6"
GW12_REPORT_MRSIGNER = "001d5f40ffe3537fee57a1ae3023850296ef24ea287a0c38ba4fd23615f32a06"


def _run(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, ["audit", *[str(a) for a in args]])
    return result.exit_code, result.stdout, result.stderr


def _unsigned(signed: Path, out: Path) -> Path:
    data = signed.read_bytes()
    section = ELFFile(io.BytesIO(data)).get_section_by_name(".note.sgxmeta")
    start, end = section["sh_offset"] + 25, section["sh_offset"] + section["sh_size"]
    out.write_bytes(data[:start] + bytes(end - start) + data[end:])
    return out


@pytest.fixture()
def bazinga(vectors: Path) -> Path:
    return vectors / "dcap" / "bazingajack-seal"


@pytest.mark.vectors
def test_verify_match_exits_0_with_text_and_json(bazinga: Path) -> None:
    args = ("verify", "--unsigned", bazinga / "BazingaJack.libenclave_seal.so", "--signed-enclave",
            bazinga / "BazingaJack.libenclave_seal.signed.so", "--quote", bazinga / "BazingaJack.quote.dat",
            "--config", bazinga / "BazingaJack.Enclave_Seal.config.xml")
    code, out, err = _run(*args)
    assert code == 0, err
    assert "Reproducibility report" in out and BAZINGA_MRENCLAVE in out
    flat = " ".join(out.split())
    assert "CANNOT be trusted: the evidence comes from a DEBUG enclave" in flat and "everything matches" in flat
    code, out, _ = _run(*args, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] is True and doc["problems"] == []
    assert doc["mrenclave"]["values"] == dict.fromkeys(("source", "sigstruct", "replayed", "evidence"),
                                                       BAZINGA_MRENCLAVE)


@pytest.mark.vectors
def test_verify_shows_evidence_text_literally(vectors: Path, tmp_path: Path) -> None:
    folder = vectors / "ias" / "iot-gateway-2021-06"
    code, out, err = _run("verify", "--unsigned", _unsigned(folder / "enclave.signed.so", tmp_path / "enclave.so"),
                          "--signed-enclave", folder / "enclave.signed.so",
                          "--ias-report", report_with_markup(folder, tmp_path / "r.json"))
    assert code == 1 and "IAS_BAD_SIGNATURE" in err and "Traceback" not in err
    assert f"{MARKUP} (reported, not judged)" in " ".join(out.split())


@pytest.mark.vectors
def test_verify_mrsigner_mismatch_exits_1(vectors: Path, tmp_path: Path) -> None:
    folder = vectors / "ias" / "iot-gateway-2021-12"
    unsigned = _unsigned(folder / "enclave.signed.so", tmp_path / "enclave.so")
    args = ("verify", "--unsigned", unsigned, "--signed-enclave", folder / "enclave.signed.so",
            "--ias-report", folder / "ias_report.json")
    code, out, err = _run(*args)
    assert code == 1
    assert "CANNOT be trusted" in out and "MRSIGNER" in err
    code, out, _ = _run(*args, "--json")
    doc = json.loads(out)
    assert code == 1 and doc["ok"] is False
    assert doc["mrsigner"]["matches"] is False and doc["mrsigner"]["values"]["evidence"] == GW12_REPORT_MRSIGNER
    assert doc["report_data"]["trusted"] is False


@pytest.mark.vectors
def test_verify_unusable_input_exits_2(bazinga: Path, tmp_path: Path, vectors: Path) -> None:
    signed = bazinga / "BazingaJack.libenclave_seal.signed.so"
    unsigned = bazinga / "BazingaJack.libenclave_seal.so"
    cases = [
        (("verify", "--signed-enclave", signed), "--unsigned FILE"),
        (("verify", "--unsigned", unsigned, "--signed-enclave", tmp_path / "absent.so"), "does not exist"),
        (("verify", "--unsigned", unsigned, "--signed-enclave", signed, "--quote", bazinga / "BazingaJack.quote.dat",
          "--ias-report", vectors / "ias" / "iot-gateway-2021-06" / "ias_report.json"), "one piece of evidence"),
        (("verify", "--unsigned", unsigned, "--signed-enclave", signed, "--ias-report",
          vectors / "ias" / "iot-gateway-2021-12" / "quote.json"), "IAS"),
        (("verify", "--src", tmp_path, "--signed-enclave", signed), "no build recipe"),
        (("verify", "--src", "http://example.org/repo.git", "--signed-enclave", signed), "plain http"),
    ]
    for args, message in cases:
        code, _, err = _run(*args)
        assert code == 2, (args, err)
        assert message in err, (message, err)
        assert "Traceback" not in err


def test_help_has_examples() -> None:
    for command in ("verify", "reference"):
        code, out, _ = _run(command, "--help")
        assert code == 0 and "Examples" in out and "sgx-iot audit " + command in out


def test_reference_from_sgx_iot_source(tmp_path: Path) -> None:
    shutil.copytree(installed_source_root() / "sgx_iot", tmp_path / "repo" / "src" / "sgx_iot",
                    ignore=shutil.ignore_patterns("__pycache__"))
    code, out, err = _run("reference", "--src", tmp_path / "repo")
    assert code == 0, err
    printed = Policy.from_toml(out)
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text("[tcb]\nallow_debug = false\n")
    code, out, err = _run("reference", "--src", tmp_path / "repo", "--out", policy_file, "--json")
    assert code == 0, err
    doc = json.loads(out)
    written = Policy.load(policy_file)
    assert written.mrenclaves == printed.mrenclaves == {bytes.fromhex(doc["mrenclave"])}
    assert doc["policy_id"] == written.id


@pytest.mark.vectors
def test_reference_refuses_an_unreproduced_enclave(bazinga: Path, tmp_path: Path) -> None:
    unsigned = bytearray((bazinga / "BazingaJack.libenclave_seal.so").read_bytes())
    text = ELFFile(io.BytesIO(bytes(unsigned))).get_section_by_name(".text")
    unsigned[text["sh_offset"]] ^= 0x01
    (tmp_path / "enclave.so").write_bytes(bytes(unsigned))
    out = tmp_path / "policy.toml"
    code, _, err = _run("reference", "--unsigned", tmp_path / "enclave.so", "--signed-enclave",
                        bazinga / "BazingaJack.libenclave_seal.signed.so", "--out", out)
    assert code == 1 and "REPRODUCIBILITY_FAILED" in err
    assert not out.exists()
    code, _, err = _run("reference", "--unsigned", bazinga / "BazingaJack.libenclave_seal.so", "--signed-enclave",
                        bazinga / "BazingaJack.libenclave_seal.signed.so", "--out", out)
    assert code == 0, err
    policy = Policy.load(out)
    assert policy.mrenclaves == {bytes.fromhex(BAZINGA_MRENCLAVE)} and policy.isv_prod_id == 0
