"""`sgx-iot verify ias-report` and `sgx-iot verify quote`: output and exit codes (0 ok, 1 refused, 2 bad input)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _vector_helpers import MARKUP, g06, g12, report_with_markup  # noqa: F401  (fixtures)
from typer.testing import CliRunner

from sgx_iot.cli.verify import app

pytestmark = pytest.mark.vectors

runner = CliRunner()
NOW = "1752919277"  # vectors/README.md, dcap/dcap-qvl-sample


def _run(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def dcap(vectors: Path) -> Path:
    return vectors / "dcap/dcap-qvl-sample"


# --- ias-report ------------------------------------------------------------------------------------------------


def test_ias_report_2021_06_end_to_end_exits_0(g06: Path) -> None:
    code, out, _ = _run(
        "ias-report", g06 / "ias_report.json", "--signed-enclave", g06 / "enclave.signed.so",
        "--data", g06 / "Sensor_Data", "--signature", g06 / "Sensor_Data.signature",
    )  # fmt: skip
    assert code == 0, out
    assert "GROUP_OUT_OF_DATE" in out
    assert "FAIL" not in out
    assert "BEGIN PUBLIC KEY" in out


def test_ias_report_json_2021_06(g06: Path) -> None:
    code, out, _ = _run(
        "ias-report", g06 / "ias_report.json", "--signed-enclave", g06 / "enclave.signed.so",
        "--data", g06 / "Sensor_Data", "--signature", g06 / "Sensor_Data.signature", "--json",
    )  # fmt: skip
    assert code == 0
    result = json.loads(out)
    assert result["ok"] is True
    assert result["report"]["isv_enclave_quote_status"] == "GROUP_OUT_OF_DATE"
    assert result["report"]["timestamp"].startswith("2021-06-03T20:55:31.491437")
    assert result["enclave"]["mr_enclave"] == "4985c91b6a9cf7a4d56384d25ed9008d9be7f61fa108e4e2669247b11acc013f"
    assert result["enclave"]["mr_signer"] == "3db0e0741cfed690b4ce6499e3fb078dfb3918976747d282f6818cf387dccb8e"
    assert result["enclave"]["isv_svn"] == 1234
    assert result["enclave"]["attributes"]["debug"] is True
    assert result["public_key"]["sec1"] == (
        "04e9deb80dbcb9cb1fcec02945539769cdb54beec77bd8a75320ce1f8ec77f7ebb"
        "f7cb95343ff2b011cde00a8501729480a6cc7e17cfb10094dd04932e03d3aeb0"
    )
    outcomes = {c["name"]: c["outcome"] for c in result["checks"]}
    assert outcomes["IAS signature"] == "pass"
    assert outcomes["MRENCLAVE replay"] == "pass"
    assert outcomes["MRENCLAVE"] == outcomes["MRSIGNER"] == "pass"
    assert outcomes["data signature"] == "pass"
    assert outcomes["quote status"] == outcomes["debug"] == "info"


def test_ias_report_exact_body_with_headers_exits_0(g06: Path) -> None:
    code, out, _ = _run(
        "ias-report", g06 / "ias_response_body.exact.json", "--headers", g06 / "ias_response_headers.extracted.json"
    )
    assert code == 0, out


def test_ias_report_2021_12_signed_enclave_has_another_mrsigner_exits_1(g12: Path) -> None:
    code, out, err = _run(
        "ias-report", g12 / "ias_report.json", "--signed-enclave", g12 / "enclave.signed.so", "--json"
    )
    assert code == 1
    outcomes = {c["name"]: c["outcome"] for c in json.loads(out)["checks"]}
    assert outcomes["MRSIGNER"] == "fail"
    assert outcomes["MRENCLAVE"] == "pass"  # same enclave code, re-signed with another key
    assert outcomes["IAS signature"] == "pass"
    assert "MRSIGNER" in err
    assert "7b9b32fa1d255acf8ebb245308b7ce7a1f755a5d325a64af1309f2e9c686e00d" in err


def test_ias_report_2021_12_with_2021_06_data_signature_exits_1(g06: Path, g12: Path) -> None:
    code, out, _ = _run(
        "ias-report", g12 / "ias_report.json",
        "--data", g06 / "Sensor_Data", "--signature", g06 / "Sensor_Data.signature", "--json",
    )  # fmt: skip
    assert code == 1
    outcomes = {c["name"]: c["outcome"] for c in json.loads(out)["checks"]}
    assert outcomes["data signature"] == "fail"
    assert outcomes["public key"] == "pass"


def test_ias_report_other_data_exits_1(g06: Path, tmp_path: Path) -> None:
    data = bytearray((g06 / "Sensor_Data").read_bytes())
    data[0] ^= 1
    (tmp_path / "data").write_bytes(bytes(data))
    code, _, err = _run(
        "ias-report", g06 / "ias_report.json", "--data", tmp_path / "data", "--signature", g06 / "Sensor_Data.signature"
    )
    assert code == 1
    assert "data signature" in err


def test_ias_report_tampered_body_exits_1(g06: Path, tmp_path: Path) -> None:
    stored = json.loads((g06 / "ias_report.json").read_bytes())
    stored["body"]["isvEnclaveQuoteStatus"] = "OK"
    (tmp_path / "report.json").write_text(json.dumps(stored))
    code, _, err = _run("ias-report", tmp_path / "report.json")
    assert code == 1
    assert "IAS_BAD_SIGNATURE" in err


def test_ias_report_not_json_exits_2(g12: Path) -> None:
    code, _, err = _run("ias-report", g12 / "quote.json")
    assert code == 2
    assert "not JSON" in err


def test_ias_report_missing_file_exits_2(tmp_path: Path) -> None:
    code, _, err = _run("ias-report", tmp_path / "absent.json")
    assert code == 2
    assert "does not exist" in err


def test_ias_report_data_without_signature_exits_2(g06: Path) -> None:
    code, _, err = _run("ias-report", g06 / "ias_report.json", "--data", g06 / "Sensor_Data")
    assert code == 2
    assert "signature" in err


def test_ias_report_signed_enclave_that_is_not_an_elf_exits_2(g06: Path) -> None:
    code, _, _ = _run("ias-report", g06 / "ias_report.json", "--signed-enclave", g06 / "Sensor_Data")
    assert code == 2


def test_ias_report_text_from_the_report_is_shown_literally(g06: Path, tmp_path: Path) -> None:
    """Report fields are not rich markup: they used to crash the renderer (MarkupError) or could restyle it."""
    code, out, err = _run("ias-report", report_with_markup(g06, tmp_path / "r.json"))
    assert code == 1 and "IAS_BAD_SIGNATURE" in err
    assert MARKUP in out and "Traceback" not in err


# --- quote -----------------------------------------------------------------------------------------------------


def test_quote_sample_exits_0(dcap: Path) -> None:
    code, out, _ = _run("quote", dcap / "sgx_quote", "--collateral", dcap / "sgx_quote_collateral.json", "--now", NOW)
    assert code == 0, out
    assert "ConfigurationAndSWHardeningNeeded" in out
    assert "INTEL-SA-00289" in out


def test_quote_sample_json(dcap: Path) -> None:
    code, out, _ = _run(
        "quote", dcap / "sgx_quote", "--collateral", dcap / "sgx_quote_collateral.json", "--now", NOW, "--json"
    )
    assert code == 0
    result = json.loads(out)
    assert result["status"] == "ConfigurationAndSWHardeningNeeded"
    assert result["advisory_ids"] == ["INTEL-SA-00289", "INTEL-SA-00615"]
    assert result["qe_status"] == "UpToDate"
    assert result["ppid"] == "d04ec06d4e6d92dc90d0ad3cf5ee2ddf"
    assert result["enclave"]["mr_enclave"] == "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
    assert bytes.fromhex(result["enclave"]["report_data"]) == b"Hello, world!" + bytes(51)


def test_quote_with_explicit_intel_root_pem_exits_0(dcap: Path, vectors: Path) -> None:
    code, out, _ = _run(
        "quote", dcap / "sgx_quote", "--collateral", dcap / "sgx_quote_collateral.json", "--now", NOW,
        "--root", vectors / "roots/Intel_SGX_Root_CA.pem",
    )  # fmt: skip
    assert code == 0, out


def test_quote_after_the_collateral_window_exits_1(dcap: Path) -> None:
    code, _, err = _run(
        "quote", dcap / "sgx_quote", "--collateral", dcap / "sgx_quote_collateral.json", "--now", "1752919279"
    )
    assert code == 1
    assert "COLLATERAL_EXPIRED" in err


def test_quote_tampered_reportdata_exits_1(dcap: Path, tmp_path: Path) -> None:
    quote = bytearray((dcap / "sgx_quote").read_bytes())
    quote[48 + 320] ^= 0x01
    (tmp_path / "quote").write_bytes(bytes(quote))
    code, _, err = _run("quote", tmp_path / "quote", "--collateral", dcap / "sgx_quote_collateral.json", "--now", NOW)
    assert code == 1
    assert "QUOTE_BAD_SIGNATURE" in err


def test_quote_wrong_root_exits_1(dcap: Path, vectors: Path) -> None:
    # the IAS report-signing CA is a real root, but not the one that signed this quote's PCK chain
    code, _, err = _run(
        "quote", dcap / "sgx_quote", "--collateral", dcap / "sgx_quote_collateral.json", "--now", NOW,
        "--root", vectors / "roots/Intel_SGX_Attestation_Report_Signing_CA.pem",
    )  # fmt: skip
    assert code == 1
    assert "UNTRUSTED_ROOT" in err


def test_quote_truncated_exits_2(dcap: Path, tmp_path: Path) -> None:
    (tmp_path / "quote").write_bytes((dcap / "sgx_quote").read_bytes()[:500])
    code, _, _ = _run("quote", tmp_path / "quote", "--collateral", dcap / "sgx_quote_collateral.json", "--now", NOW)
    assert code == 2


def test_quote_bad_collateral_exits_2(dcap: Path, g12: Path) -> None:
    code, _, err = _run("quote", dcap / "sgx_quote", "--collateral", g12 / "quote.json", "--now", NOW)
    assert code == 2
    assert "QuoteCollateralV3" in err


def test_quote_bad_root_exits_2(dcap: Path, g06: Path) -> None:
    code, _, err = _run(
        "quote", dcap / "sgx_quote", "--collateral", dcap / "sgx_quote_collateral.json", "--root", g06 / "Sensor_Data"
    )
    assert code == 2
    assert "certificate" in err


def test_quote_now_beyond_u64_exits_2_in_one_line(dcap: Path) -> None:
    code, _, err = _run(
        "quote", dcap / "sgx_quote", "--collateral", dcap / "sgx_quote_collateral.json", "--now", str(1 << 64)
    )
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_quote_without_collateral_exits_2(dcap: Path) -> None:
    code, _, _ = _run("quote", dcap / "sgx_quote")
    assert code == 2


def test_help_shows_examples() -> None:
    for command in ("ias-report", "quote"):
        code, out, _ = _run(command, "--help")
        assert code == 0
        assert "sgx-iot verify " + command in out
