"""`sgx-iot inspect` and `sgx_iot.sgx.detect`: recognition of every artefact kind, JSON fields, exit codes."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import typer
from cryptography.hazmat.primitives.serialization import Encoding
from typer.testing import CliRunner

from sgx_iot.cli.inspect import render_text, run
from sgx_iot.errors import FormatError
from sgx_iot.sgx import detect as d
from sgx_iot.sgx.attributes import Attributes
from sgx_iot.sgx.dcap_quote import CertificationData, DcapQuote
from sgx_iot.sgx.keyrequest import seal_key_request
from sgx_iot.sgx.report import Report, ReportBody, TargetInfo
from sgx_iot.sgx.sealed import seal

app = typer.Typer()
app.command()(run)
runner = CliRunner()

BAZINGA_MRENCLAVE = "d17c8e8a6cb4629e581865693d12a25f3bb0072dfd7b5cb1d12df7f850fdf0f6"
BAZINGA_MRSIGNER = "ef7de2edeb583a6ca05d147b7b3e41ec6f888e924e877d5b6c034d367c435a1c"


def _json(path: Path) -> dict[str, Any]:
    result = runner.invoke(app, [str(path), "--json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _fail(path: Path) -> str:
    result = runner.invoke(app, [str(path)])
    assert result.exit_code == 2, result.stdout
    assert result.stdout == ""
    message = result.stderr.strip()
    assert message.startswith("error:") and "Traceback" not in message
    return message


# --- real vectors ----------------------------------------------------------------------------------------------


def test_dcap_sample_quote(vectors: Path) -> None:
    out = _json(vectors / "dcap/dcap-qvl-sample/sgx_quote")
    assert out["kind"] == "dcap-quote"
    f = out["fields"]
    assert f["header"]["version"] == 3 and f["header"]["qe_vendor_id"] == "939a7233f79c4ca9940a0db3957f0607"
    assert f["report_body"]["mr_enclave"] == "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
    assert f["report_body"]["attributes"]["flags"] == "0x0000000000000005"
    assert f["report_body"]["attributes"]["debug"] is False
    assert f["report_body"]["report_data"] == b"Hello, world!".hex() + "00" * 51
    assert f["signature_data"]["qe_auth_data"] == bytes(range(32)).hex()
    cert = f["signature_data"]["certification"]
    assert cert["cert_type"] == 5 and len(cert["certificates"]) == 3
    assert cert["certificates"][2]["subject"].endswith("CN=Intel SGX Root CA")
    checks = f["checks"]
    assert (checks["isv_signature"], checks["qe_report_binding"], checks["qe_report_signature"]) == ("ok",) * 3


def test_bazingajack_quote_and_report(vectors: Path) -> None:
    quote = _json(vectors / "dcap/bazingajack-seal/BazingaJack.quote.dat")["fields"]
    report = _json(vectors / "dcap/bazingajack-seal/BazingaJack.report.dat")
    assert report["kind"] == "report"
    assert report["fields"]["body"] == quote["report_body"]
    assert quote["report_body"]["mr_enclave"] == BAZINGA_MRENCLAVE
    assert quote["report_body"]["mr_signer"] == BAZINGA_MRSIGNER


def test_tampered_quote_shows_failed_check(vectors: Path, tmp_path: Path) -> None:
    raw = bytearray((vectors / "dcap/dcap-qvl-sample/sgx_quote").read_bytes())
    raw[48 + 320] ^= 1  # REPORTDATA
    path = tmp_path / "quote"
    path.write_bytes(bytes(raw))
    out = _json(path)
    assert out["fields"]["checks"]["isv_signature"] == "QUOTE_BAD_SIGNATURE"
    assert out["fields"]["checks"]["qe_report_binding"] == "ok"


@pytest.mark.parametrize(
    ("oid", "replacement"),
    [
        ("06072a8648ce3d0201", "06072a8648ce3d0209"),  # id-ecPublicKey → an unknown key algorithm
        ("06082a8648ce3d030107", "06082a8648ce3d030109"),  # prime256v1 → an unsupported curve
    ],
)
def test_quote_whose_pck_key_cannot_be_loaded(vectors: Path, tmp_path: Path, oid: str, replacement: str) -> None:
    """The leaf's key used to escape as cryptography's UnsupportedAlgorithm (a traceback from inspect)."""
    raw = (vectors / "dcap/dcap-qvl-sample/sgx_quote").read_bytes()
    quote = DcapQuote.parse(raw)
    leaf, *rest = quote.pck_chain()
    der = leaf.public_bytes(Encoding.DER)
    assert der.count(bytes.fromhex(oid)) == 1
    bad_leaf = der.replace(bytes.fromhex(oid), bytes.fromhex(replacement))
    pem = b"".join(
        [b"-----BEGIN CERTIFICATE-----\n", base64.encodebytes(bad_leaf), b"-----END CERTIFICATE-----\n"]
        + [c.public_bytes(Encoding.PEM) for c in rest]
    )
    certification = CertificationData(5, pem + b"\x00")
    path = tmp_path / "quote"
    path.write_bytes(replace(quote, signature_data=replace(quote.signature_data, certification=certification))
                     .to_bytes())
    checks = _json(path)["fields"]["checks"]
    assert checks["qe_report_signature"].startswith("the PCK certificate's public key is unusable")
    assert checks["isv_signature"] == "ok"


def test_epid_quote(vectors: Path) -> None:
    out = _json(vectors / "ias/iot-gateway-2021-12/quote.bin")
    assert out["kind"] == "epid-quote"
    assert out["fields"]["signature_len"] == 680
    assert out["fields"]["report_body"]["mr_enclave"] == (
        "72cfdb1e92ca2354857bc3ddd5133888fc122bc0eb467e42b80c61bdf027f43f"
    )


@pytest.mark.parametrize(
    "name", ["ias/iot-gateway-2021-06/ias_report.json", "ias/iot-gateway-2021-06/ias_response_body.exact.json"]
)
def test_ias_report(vectors: Path, name: str) -> None:
    out = _json(vectors / name)
    assert out["kind"] == "ias-report"
    text = json.dumps(out)
    assert "4985c91b6a9cf7a4d56384d25ed9008d9be7f61fa108e4e2669247b11acc013f" in text
    assert "GROUP_OUT_OF_DATE" in text
    assert "INTEL-SA-00293" in text


def test_sigstruct(vectors: Path) -> None:
    out = _json(vectors / "ias/iot-gateway-2021-06/sigstruct.bin")
    assert out["kind"] == "sigstruct"
    f = out["fields"]
    assert f["date"] == "2021-06-03"
    assert f["mrsigner"] == "3db0e0741cfed690b4ce6499e3fb078dfb3918976747d282f6818cf387dccb8e"
    assert f["enclave_hash"] == "4985c91b6a9cf7a4d56384d25ed9008d9be7f61fa108e4e2669247b11acc013f"
    assert f["isv_svn"] == 1234
    assert f["attributes"]["flag_names"] == ["MODE64BIT"]
    assert f["attribute_mask"]["flags"] == "0xfffffffffffffffd"
    assert f["signature_check"] == "ok"


def test_signed_and_unsigned_enclave(vectors: Path) -> None:
    signed = _json(vectors / "dcap/bazingajack-seal/BazingaJack.libenclave_seal.signed.so")
    assert signed["kind"] == "sdk-enclave"
    f = signed["fields"]
    assert f["signed"] is True
    assert [m["version"] for m in f["metadata"]] == ["1.5"]
    assert f["metadata"][0]["enclave_size"] == "0x8000000"
    assert f["metadata"][0]["sigstruct"]["enclave_hash"] == BAZINGA_MRENCLAVE
    assert f["metadata"][0]["sigstruct"]["mrsigner"] == BAZINGA_MRSIGNER
    config = f["metadata"][0]["configuration"]  # values of BazingaJack.Enclave_Seal.config.xml
    assert (config["StackMaxSize"], config["HeapMaxSize"], config["TCSNum"]) == (0x40000, 67108864, 1)
    assert (config["TCSPolicy"], config["DisableDebug"], config["MiscMask"]) == (1, 0, 0xFFFFFFFF)
    unsigned = _json(vectors / "dcap/bazingajack-seal/BazingaJack.libenclave_seal.so")
    assert unsigned["kind"] == "sdk-enclave" and unsigned["fields"]["signed"] is False


def test_enclave_with_three_metadata_blobs(vectors: Path) -> None:
    out = _json(vectors / "enclaves/Jumpst3r+tensorflow-lite-sgx__enclave.signed.so")
    assert [m["version"] for m in out["fields"]["metadata"]] == ["2.4", "2.1", "1.4"]


def test_sealed_blob(vectors: Path) -> None:
    out = _json(vectors / "sealed/zkTee.sealed_data_blob.txt")
    assert out["kind"] == "sealed-data"
    f = out["fields"]
    assert (f["plain_text_offset"], f["payload_size"]) == (15, 27)
    assert f["additional_mac_text_ascii"] == "aad mac text"
    assert f["key_request"]["key_name"] == {"value": 4, "name": "SEAL"}
    assert f["key_request"]["key_policy"]["names"] == ["MRSIGNER"]
    assert f["key_request"]["misc_mask"] == "0xf0000000"


def test_text_output(vectors: Path) -> None:
    result = runner.invoke(app, [str(vectors / "dcap/dcap-qvl-sample/sgx_quote")])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].endswith("sgx_quote: DCAP quote v3 (ECDSA-P256)")
    assert "    mr_enclave: 33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb" in lines
    assert "      flag_names: INIT, MODE64BIT" in lines  # flags 0x5 (README)
    assert "      debug: no" in lines
    assert "        -----BEGIN CERTIFICATE-----" in lines
    assert "    isv_signature: ok" in lines[lines.index("  checks:") :]


# --- bad input -------------------------------------------------------------------------------------------------


def test_not_json_quote_json(vectors: Path) -> None:
    message = _fail(vectors / "ias/iot-gateway-2021-12/quote.json")
    assert "not valid JSON" in message and "\n" not in message


@pytest.mark.parametrize(
    "name",
    [
        "ias/iot-gateway-2021-06/Sensor_Data",
        "roots/Intel_SGX_Root_CA.der",
        "dcap/dcap-qvl-sample/sgx_quote_collateral.json",
    ],
)
def test_unrecognised(vectors: Path, name: str) -> None:
    message = _fail(vectors / name)
    assert "not" in message and Path(name).name in message


def test_truncated_quote(vectors: Path, tmp_path: Path) -> None:
    path = tmp_path / "short.quote"
    path.write_bytes((vectors / "dcap/dcap-qvl-sample/sgx_quote").read_bytes()[:-100])
    assert "signature_data_len" in _fail(path)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    assert "does not exist" in _fail(tmp_path / "nope")
    assert "folder" in _fail(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert "not a recognised" in _fail(path)


# --- constructed structures (no magic: recognised by their reserved bytes) ------------------------------------


def test_constructed_kinds(tmp_path: Path) -> None:
    body = ReportBody(mr_enclave=b"\x11" * 32, attributes=Attributes(0x5, 0x3), isv_svn=2)
    request = seal_key_request(key_id=b"\x22" * 32, cpu_svn=b"\x33" * 16, isv_svn=2)
    cases = {
        "report": Report(body=body, key_id=b"\x01" * 32, mac=b"\x02" * 16).to_bytes(),
        "target-info": TargetInfo(mr_enclave=b"\x44" * 32, attributes=Attributes(0x5, 0x3)).to_bytes(),
        "key-request": request.to_bytes(),
        "sealed-data": seal(bytes(16), request, b"secret", b"aad").to_bytes(),
        "epid-quote-body": bytes.fromhex("02000000") + bytes(44) + body.to_bytes(),
    }
    for kind, raw in cases.items():
        found = d.detect(raw, kind)
        assert found.kind == kind, kind
        assert found.obj.to_bytes() == raw
        path = tmp_path / kind
        path.write_bytes(raw)
        assert _json(path)["kind"] == kind


def test_random_fixed_sizes_are_not_guessed() -> None:
    for size in (432, 512, 1808, 600):
        with pytest.raises(FormatError):
            d.detect(os.urandom(size) if size != 600 else b"\xff" * 600, "random")


def test_render_text() -> None:
    lines = render_text({"a": 1, "b": {"c": "x\ny", "d": [], "e": None, "f": True}, "g": [{"h": 2}], "i": ["A", "B"]})
    assert lines == [
        "a: 1", "b:", "  c:", "    x", "    y", "  d: (none)", "  e: -", "  f: yes", "g:", "  [0]", "    h: 2",
        "i: A, B",
    ]


def test_registered_in_main_cli(vectors: Path) -> None:
    """`sgx-iot inspect` through the real entry point (and its exit code for bad input)."""
    code = "from sgx_iot.cli.main import main; main()"
    ok = subprocess.run(
        [sys.executable, "-c", code, "inspect", "--json", str(vectors / "sigstruct/auditee-tests.sigstruct")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    mrsigner = "bd71c6380ef77c5417e8b2d1ce2d4b6504b9f418e5049342440cfff2443d95bd"  # vectors/README.md
    assert json.loads(ok.stdout)["fields"]["mrsigner"] == mrsigner
    bad = subprocess.run(
        [sys.executable, "-c", code, "inspect", str(vectors / "ias/iot-gateway-2021-06/Sensor_Data")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "name",
    [
        "ias/iot-gateway-2021-06/ias_report.json",
        "ias/iot-gateway-2021-12/ias_response.json",
        "ias/iot-gateway-2021-12/ias_response_body.exact.json",
    ],
)
def test_detect_ias_document(vectors: Path, name: str) -> None:
    """The sgx layer recognises the IAS JSON itself (the CLI then uses the verifier's full parser)."""
    found = d.detect((vectors / name).read_bytes(), name)
    assert found.kind == d.IAS_REPORT
    assert isinstance(found.obj, d.IasReportDocument)
    assert found.obj.quote.is_body_only
    assert found.obj.quote.report_body.isv_svn == 1234
    assert found.obj.body["isvEnclaveQuoteStatus"] == "GROUP_OUT_OF_DATE"
    assert (found.obj.headers is not None) == name.endswith("ias_report.json")
    assert d.describe(found.obj)["quote"]["report_body"]["isv_svn"] == 1234


def test_detect_refuses_headers_json(vectors: Path) -> None:
    with pytest.raises(FormatError) as info:
        d.detect((vectors / "ias/iot-gateway-2021-06/ias_response_headers.extracted.json").read_bytes(), "h.json")
    assert "not an IAS report" in str(info.value)
