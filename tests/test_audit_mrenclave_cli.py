"""`sgx-iot audit mrenclave`: each input kind against the vectors' README values, and the exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from _vector_helpers import MARKUP, report_with_markup
from typer.testing import CliRunner

from sgx_iot.cli import audit
from sgx_iot.sgx.sdk_enclave import SdkEnclave

runner = CliRunner()
app = typer.Typer()
app.add_typer(audit.app, name="audit")

BAZINGA = "d17c8e8a6cb4629e581865693d12a25f3bb0072dfd7b5cb1d12df7f850fdf0f6"
GATEWAY_06 = "4985c91b6a9cf7a4d56384d25ed9008d9be7f61fa108e4e2669247b11acc013f"
GATEWAY_12 = "72cfdb1e92ca2354857bc3ddd5133888fc122bc0eb467e42b80c61bdf027f43f"


def _run(*args: str) -> Any:
    return runner.invoke(app, ["audit", "mrenclave", *args])


def _json(*args: str) -> dict[str, Any]:
    result = _run(*args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    ("name", "mrenclave", "blobs"),
    [
        ("enclaves/Jumpst3r+tensorflow-lite-sgx__enclave.signed.so",
         "dfc7158c0a5be938529dcab2731ca88b178452e1ea7085725f03cff9ed6be081", 3),
        ("enclaves/meowlawat+RDS-TEE-SGX__enclave.signed.so",
         "6aa9bc4ae194db671cb423816b8bf54ba2de0a8141bcea1a34457cab9cc4c8f4", 1),
        ("dcap/bazingajack-seal/BazingaJack.libenclave_seal.signed.so", BAZINGA, 1),
        ("ias/iot-gateway-2021-06/enclave.signed.so", GATEWAY_06, 3),
    ],
)
def test_signed_binary(vectors: Path, name: str, mrenclave: str, blobs: int) -> None:
    out = _json("--signed-binary", str(vectors / name))
    assert out["source"] == "signed-binary" and out["mrenclave"] == mrenclave
    assert out["matches_sigstruct"] is True and len(out["blobs"]) == blobs
    assert all(b["replayed_mrenclave"] == b["sigstruct_enclavehash"] == mrenclave for b in out["blobs"])


def test_signed_binary_text(vectors: Path) -> None:
    result = _run("--signed-binary", str(vectors / "ias/iot-gateway-2021-12/enclave.signed.so"))
    assert result.exit_code == 0, result.stderr
    assert GATEWAY_12 in result.stdout and "match" in result.stdout
    assert "7b9b32fa1d255acf8ebb245308b7ce7a1f755a5d325a64af1309f2e9c686e00d" in result.stdout  # its MRSIGNER


def test_ias_response_fields_are_shown_literally(vectors: Path, tmp_path: Path) -> None:
    report = report_with_markup(vectors / "ias/iot-gateway-2021-06", tmp_path / "r.json")
    result = _run("--ias-response", str(report))
    assert result.exit_code == 0, result.stderr
    assert MARKUP in result.stdout and GATEWAY_06 in result.stdout


def test_tampered_signed_binary_exits_1(vectors: Path, tmp_path: Path) -> None:
    data = bytearray((vectors / "dcap/bazingajack-seal/BazingaJack.libenclave_seal.signed.so").read_bytes())
    text = next(s for s in SdkEnclave.parse(bytes(data)).elf.sections if s.name == ".text")
    data[text.offset + 100] ^= 0xFF
    tampered = tmp_path / "tampered.signed.so"
    tampered.write_bytes(bytes(data))
    result = _run("--signed-binary", str(tampered), "--json")
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert out["matches_sigstruct"] is False and out["blobs"][0]["sigstruct_enclavehash"] == BAZINGA
    assert out["mrenclave"] != BAZINGA
    assert "MRENCLAVE_MISMATCH" in result.stderr
    assert _run("--signed-binary", str(tampered)).exit_code == 1


def test_unsigned_binary_is_a_usage_error(vectors: Path) -> None:
    result = _run("--signed-binary", str(vectors / "dcap/bazingajack-seal/BazingaJack.libenclave_seal.so"))
    assert result.exit_code == 2 and "unsigned" in result.stderr


@pytest.mark.parametrize(
    ("name", "mrenclave", "mrsigner"),
    [
        ("ias/iot-gateway-2021-06/ias_report.json", GATEWAY_06,
         "3db0e0741cfed690b4ce6499e3fb078dfb3918976747d282f6818cf387dccb8e"),
        ("ias/iot-gateway-2021-06/ias_response_body.exact.json", GATEWAY_06,
         "3db0e0741cfed690b4ce6499e3fb078dfb3918976747d282f6818cf387dccb8e"),
        ("ias/iot-gateway-2021-12/ias_report.json", GATEWAY_12,
         "001d5f40ffe3537fee57a1ae3023850296ef24ea287a0c38ba4fd23615f32a06"),
    ],
)
def test_ias_response(vectors: Path, name: str, mrenclave: str, mrsigner: str) -> None:
    out = _json("--ias-response", str(vectors / name))
    assert (out["source"], out["mrenclave"], out["mrsigner"]) == ("ias-response", mrenclave, mrsigner)
    assert out["isv_svn"] == 1234 and out["debug"] is True and out["quote_status"] == "GROUP_OUT_OF_DATE"


def test_ias_response_text(vectors: Path) -> None:
    result = _run("--ias-response", str(vectors / "ias/iot-gateway-2021-06/ias_report.json"))
    assert result.exit_code == 0 and GATEWAY_06 in result.stdout and "GROUP_OUT_OF_DATE" in result.stdout


@pytest.mark.parametrize(
    ("name", "kind", "mrenclave"),
    [
        ("dcap/bazingajack-seal/BazingaJack.quote.dat", "dcap-quote", BAZINGA),
        ("dcap/dcap-qvl-sample/sgx_quote", "dcap-quote",
         "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"),
        ("ias/iot-gateway-2021-12/quote.bin", "epid-quote", GATEWAY_12),
    ],
)
def test_quote(vectors: Path, name: str, kind: str, mrenclave: str) -> None:
    out = _json("--quote", str(vectors / name))
    assert (out["source"], out["mrenclave"]) == (kind, mrenclave)


@pytest.mark.parametrize(
    ("option", "name"),
    [
        ("--ias-response", "ias/iot-gateway-2021-12/quote.json"),  # a Python dict repr, not JSON
        ("--quote", "sealed/zkTee.sealed_data_blob.txt"),
        ("--quote", "ias/iot-gateway-2021-12/ias_report.json"),
        ("--signed-binary", "dcap/bazingajack-seal/BazingaJack.quote.dat"),
        ("--quote", "does-not-exist.bin"),
    ],
)
def test_unusable_input_exits_2(vectors: Path, option: str, name: str) -> None:
    result = _run(option, str(vectors / name))
    assert result.exit_code == 2
    assert result.stderr.startswith("error:") and "Traceback" not in result.stderr


def test_truncated_quote_exits_2(vectors: Path, tmp_path: Path) -> None:
    short = tmp_path / "short.dat"
    short.write_bytes((vectors / "dcap/bazingajack-seal/BazingaJack.quote.dat").read_bytes()[:1000])
    assert _run("--quote", str(short)).exit_code == 2
    empty = tmp_path / "empty.dat"
    empty.write_bytes(b"")
    assert _run("--quote", str(empty)).exit_code == 2


def test_exactly_one_input(vectors: Path) -> None:
    result = _run()
    assert result.exit_code == 2 and "exactly one" in result.stderr
    quote = str(vectors / "dcap/bazingajack-seal/BazingaJack.quote.dat")
    result = _run("--quote", quote, "--ias-response", quote)
    assert result.exit_code == 2 and "exactly one" in result.stderr


def test_help_has_examples() -> None:
    result = _run("--help")
    assert result.exit_code == 0 and "sgx-iot audit mrenclave --signed-binary" in result.stdout
