"""verify_mrenclave on Intel SGX SDK enclaves, against the real vectors (expected values from vectors/README.md).

The original IoT gateway's unsigned build is not published; SGX_FORMATS §2.1 establishes (on 9 real pairs) that
the sign tool changes nothing but the ``.note.sgxmeta`` descriptor, which is all zero in the unsigned file. The
tests rebuild that unsigned file by zeroing the descriptor with pyelftools (independently of the code under test).
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from sgx_iot.audit import verify_mrenclave
from sgx_iot.audit.recipe import BuildError
from sgx_iot.errors import FormatError, UsageError

BAZINGA_MRENCLAVE = "d17c8e8a6cb4629e581865693d12a25f3bb0072dfd7b5cb1d12df7f850fdf0f6"
BAZINGA_MRSIGNER = "ef7de2edeb583a6ca05d147b7b3e41ec6f888e924e877d5b6c034d367c435a1c"
GW06_MRENCLAVE = "4985c91b6a9cf7a4d56384d25ed9008d9be7f61fa108e4e2669247b11acc013f"
GW06_MRSIGNER = "3db0e0741cfed690b4ce6499e3fb078dfb3918976747d282f6818cf387dccb8e"
GW06_REPORT_DATA = ("bb7e7fc78e1fce2053a7d87bc7ee4bb5cd6997534529c0ce1fcbb9bc0db8dee9"
                    "b0aed3032e9304dd9400b1cf177ecca680947201850ae0cd11b0f23f3495cbf7")
GW06_SEC1 = ("04e9deb80dbcb9cb1fcec02945539769cdb54beec77bd8a75320ce1f8ec77f7ebb"
             "f7cb95343ff2b011cde00a8501729480a6cc7e17cfb10094dd04932e03d3aeb0")
GW12_MRENCLAVE = "72cfdb1e92ca2354857bc3ddd5133888fc122bc0eb467e42b80c61bdf027f43f"
GW12_SIGNED_MRSIGNER = "7b9b32fa1d255acf8ebb245308b7ce7a1f755a5d325a64af1309f2e9c686e00d"
GW12_REPORT_MRSIGNER = "001d5f40ffe3537fee57a1ae3023850296ef24ea287a0c38ba4fd23615f32a06"
DCAP_SAMPLE_NOW = 1752919277
DCAP_SAMPLE_MRENCLAVE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"

pytestmark = pytest.mark.vectors


def unsign(signed: bytes) -> bytes:
    """The unsigned build of ``signed``: its ``.note.sgxmeta`` descriptor zeroed (SGX_FORMATS §2.1)."""
    section = ELFFile(io.BytesIO(signed)).get_section_by_name(".note.sgxmeta")
    start = section["sh_offset"] + 12 + 13  # note header, then "sgx_metadata\0" without padding
    end = section["sh_offset"] + section["sh_size"]
    data = bytearray(signed)
    data[start:end] = bytes(end - start)
    return bytes(data)


def text_offset(data: bytes) -> int:
    return int(ELFFile(io.BytesIO(data)).get_section_by_name(".text")["sh_offset"])


@pytest.fixture()
def bazinga(vectors: Path) -> Path:
    return vectors / "dcap" / "bazingajack-seal"


@pytest.fixture()
def bazinga_source(tmp_path: Path, bazinga: Path) -> Path:
    """A source tree whose recipe is a plain command that produces the unsigned enclave."""
    src = tmp_path / "src"
    (src / "Enclave").mkdir(parents=True)
    shutil.copyfile(bazinga / "BazingaJack.Enclave_Seal.config.xml", src / "Enclave" / "Enclave.config.xml")
    unsigned = bazinga / "BazingaJack.libenclave_seal.so"
    (src / ".auditee.yml").write_text(
        "enclaves:\n  - name: bazingajack-seal\n    build:\n"
        f"      builder: cp {unsigned} out/\n      output_dir: out\n      enclave_file: {unsigned.name}\n"
        "    enclave_config: Enclave/Enclave.config.xml\n")
    return src


def test_bazingajack_rebuilt_by_recipe_matches_signed_and_quote(bazinga: Path, bazinga_source: Path) -> None:
    report = verify_mrenclave(bazinga_source, bazinga / "BazingaJack.libenclave_seal.signed.so",
                              quote=bazinga / "BazingaJack.quote.dat")
    assert report, report.problems()
    assert {k: v.hex() for k, v in report.mrenclave.values.items()} == dict.fromkeys(
        ("source", "sigstruct", "replayed", "evidence"), BAZINGA_MRENCLAVE)
    assert {k: v.hex() for k, v in report.mrsigner.values.items()} == dict.fromkeys(
        ("sigstruct", "evidence"), BAZINGA_MRSIGNER)
    assert dict(report.isv_prod_id.values) == {"sigstruct": 0, "config": 0, "evidence": 0}
    assert dict(report.isv_svn.values) == {"sigstruct": 0, "config": 0, "evidence": 0}
    assert report.differences == () and report.config_mismatches == ()
    assert report.evidence is not None and report.evidence.verified and "no collateral" in report.evidence.checks
    assert report.source is not None and report.source["recipe"]["origin"] == ".auditee.yml"
    # BazingaJack's quote comes from a DEBUG enclave: reproducible, but its REPORTDATA is the host's to choose.
    assert report.attributes.evidence_debug is True
    assert not report.report_data_trusted
    assert "DEBUG" in (report.report_data_untrusted_reason or "")
    doc = json.loads(json.dumps(report.to_dict()))
    assert doc["ok"] is True and doc["problems"] == []


def test_iot_gateway_2021_06_matches_and_binds_the_readme_key(vectors: Path) -> None:
    folder = vectors / "ias" / "iot-gateway-2021-06"
    signed = (folder / "enclave.signed.so").read_bytes()
    report = verify_mrenclave(None, signed, unsigned=unsign(signed), ias_report=folder / "ias_report.json")
    assert report, report.problems()
    assert set(report.mrenclave.values) == {"source", "sigstruct", "replayed", "evidence"}
    assert {v.hex() for v in report.mrenclave.values.values()} == {GW06_MRENCLAVE}
    assert {v.hex() for v in report.mrsigner.values.values()} == {GW06_MRSIGNER}
    assert dict(report.isv_svn.values) == {"sigstruct": 1234, "evidence": 1234}
    assert report.evidence is not None and report.evidence.verified
    assert report.evidence.status == "GROUP_OUT_OF_DATE"
    assert report.attributes.evidence_debug is True and report.attributes.matches
    assert report.report_data is not None
    assert report.report_data.value.hex() == GW06_REPORT_DATA
    assert report.report_data.binding == "legacy"
    assert report.report_data.public_key is not None and report.report_data.public_key.hex() == GW06_SEC1
    # The 2021-06 gateway ran as a DEBUG enclave (attributes 0x7): the key it reported is not protected.
    assert not report.report_data_trusted
    assert report.to_dict()["report_data"]["untrusted_reason"].startswith("the evidence comes from a DEBUG enclave")
    assert any("DEBUG" in note for note in report.notes)


def test_iot_gateway_2021_12_reports_the_mrsigner_mismatch(vectors: Path) -> None:
    folder = vectors / "ias" / "iot-gateway-2021-12"
    signed = (folder / "enclave.signed.so").read_bytes()
    report = verify_mrenclave(None, signed, unsigned=unsign(signed), ias_report=folder / "ias_report.json",
                              enclave_config=folder / "enclave.config.xml")
    assert not report
    assert report.mrenclave.matches and {v.hex() for v in report.mrenclave.values.values()} == {GW12_MRENCLAVE}
    assert not report.mrsigner.matches
    assert report.mrsigner.values["sigstruct"].hex() == GW12_SIGNED_MRSIGNER
    assert report.mrsigner.values["evidence"].hex() == GW12_REPORT_MRSIGNER
    assert report.problems() == [report.problems()[0]] and report.problems()[0].startswith("MRSIGNER differs")
    assert report.config_mismatches == ()
    assert not report.report_data_trusted
    assert report.to_dict()["report_data"]["trusted"] is False


def test_one_changed_text_byte_fails_and_says_where(bazinga: Path) -> None:
    signed = bazinga / "BazingaJack.libenclave_seal.signed.so"
    unsigned = bytearray((bazinga / "BazingaJack.libenclave_seal.so").read_bytes())
    where = text_offset(bytes(unsigned)) + 0x40
    unsigned[where] ^= 0x01
    report = verify_mrenclave(None, signed, unsigned=bytes(unsigned))
    assert not report
    assert not report.mrenclave.matches
    assert report.mrenclave.values["source"].hex() != BAZINGA_MRENCLAVE
    assert report.mrenclave.values["sigstruct"].hex() == BAZINGA_MRENCLAVE
    assert len(report.differences) == 1
    diff = report.differences[0]
    assert (diff.section, diff.section_offset, diff.file_offset, diff.length) == (".text", 0x40, where, 1)
    assert any("section .text + 0x40" in problem for problem in report.problems())


def test_config_xml_disagreeing_with_metadata_is_flagged(bazinga: Path) -> None:
    xml = (bazinga / "BazingaJack.Enclave_Seal.config.xml").read_bytes()
    signed, unsigned = bazinga / "BazingaJack.libenclave_seal.signed.so", bazinga / "BazingaJack.libenclave_seal.so"
    report = verify_mrenclave(None, signed, unsigned=unsigned,
                              enclave_config=xml.replace(b"<TCSNum>1</TCSNum>", b"<TCSNum>4</TCSNum>"))
    assert not report and report.mrenclave.matches
    assert [(m.field, m.config, m.metadata) for m in report.config_mismatches] == [("TCSNum", 4, 1)]
    assert "TCSNum: configuration says 4, metadata says 1" in report.problems()[0]
    report = verify_mrenclave(None, signed, unsigned=unsigned,
                              enclave_config=xml.replace(b"<ISVSVN>0</ISVSVN>", b"<ISVSVN>7</ISVSVN>"))
    assert not report.isv_svn.matches and report.isv_svn.values["config"] == 7
    assert [m.field for m in report.config_mismatches] == ["ISVSVN"]


def test_tampered_ias_report_is_not_authentic(vectors: Path, tmp_path: Path) -> None:
    folder = vectors / "ias" / "iot-gateway-2021-06"
    signed = (folder / "enclave.signed.so").read_bytes()
    doc = json.loads((folder / "ias_report.json").read_text())
    doc["body"]["isvEnclaveQuoteStatus"] = "OK"
    report = verify_mrenclave(None, signed, unsigned=unsign(signed), ias_report=json.dumps(doc).encode())
    assert not report
    assert report.evidence is not None and not report.evidence.verified
    assert report.evidence.error is not None and report.evidence.error.startswith("IAS_BAD_SIGNATURE")
    assert report.mrenclave.matches and not report.report_data_trusted


def test_tampered_quote_report_data_is_refused(bazinga: Path) -> None:
    quote = bytearray((bazinga / "BazingaJack.quote.dat").read_bytes())
    quote[48 + 320] ^= 0x80  # first byte of the ISV report's REPORTDATA
    report = verify_mrenclave(None, bazinga / "BazingaJack.libenclave_seal.signed.so",
                              unsigned=bazinga / "BazingaJack.libenclave_seal.so", quote=bytes(quote))
    assert not report
    assert report.evidence is not None and report.evidence.error is not None
    assert report.evidence.error.startswith("QUOTE_BAD_SIGNATURE")


def test_quote_with_collateral_is_checked_by_dcap_qvl(bazinga: Path, vectors: Path) -> None:
    sample = vectors / "dcap" / "dcap-qvl-sample"
    report = verify_mrenclave(None, bazinga / "BazingaJack.libenclave_seal.signed.so",
                              unsigned=bazinga / "BazingaJack.libenclave_seal.so", quote=sample / "sgx_quote",
                              collateral=sample / "sgx_quote_collateral.json", now=DCAP_SAMPLE_NOW)
    assert report.evidence is not None and report.evidence.verified
    assert report.evidence.status == "ConfigurationAndSWHardeningNeeded"
    assert set(report.evidence.advisory_ids) == {"INTEL-SA-00289", "INTEL-SA-00615"}
    # A genuine quote of another enclave: the report must say it is not this one.
    assert not report and not report.mrenclave.matches
    assert report.mrenclave.values["evidence"].hex() == DCAP_SAMPLE_MRENCLAVE
    expired = verify_mrenclave(None, bazinga / "BazingaJack.libenclave_seal.signed.so",
                               unsigned=bazinga / "BazingaJack.libenclave_seal.so", quote=sample / "sgx_quote",
                               collateral=sample / "sgx_quote_collateral.json", now=DCAP_SAMPLE_NOW + 10)
    assert expired.evidence is not None and expired.evidence.error is not None
    assert expired.evidence.error.startswith("COLLATERAL_EXPIRED")


def test_unusable_inputs(bazinga: Path, vectors: Path, tmp_path: Path) -> None:
    signed = bazinga / "BazingaJack.libenclave_seal.signed.so"
    unsigned = bazinga / "BazingaJack.libenclave_seal.so"
    with pytest.raises(UsageError, match="--unsigned FILE"):
        verify_mrenclave(None, signed)
    with pytest.raises(UsageError, match="one piece of evidence"):
        verify_mrenclave(None, signed, unsigned=unsigned, quote=bazinga / "BazingaJack.quote.dat",
                         ias_report=vectors / "ias" / "iot-gateway-2021-06" / "ias_report.json")
    with pytest.raises(UsageError, match="collateral goes with"):
        verify_mrenclave(None, signed, unsigned=unsigned, collateral="{}")
    with pytest.raises(UsageError, match="unsigned build"):
        verify_mrenclave(None, unsigned, unsigned=unsigned)
    with pytest.raises(UsageError, match="does not exist"):
        verify_mrenclave(None, tmp_path / "absent.so", unsigned=unsigned)
    with pytest.raises(FormatError):
        verify_mrenclave(None, b"not an enclave", unsigned=unsigned)
    with pytest.raises(FormatError):
        verify_mrenclave(None, signed, unsigned=b"\x7fELF truncated")
    with pytest.raises(FormatError):
        verify_mrenclave(None, signed, unsigned=unsigned, quote=b"\x03\x00 short quote")
    with pytest.raises(FormatError, match="nested too deeply"):  # json's RecursionError used to escape
        verify_mrenclave(None, signed, unsigned=unsigned, evidence=b"[" * 100_000)
    with pytest.raises(UsageError, match="is for Intel SGX SDK enclaves"):
        verify_mrenclave(None, vectors / "ias" / "iot-gateway-2021-06" / "sigstruct.bin", unsigned=unsigned)


def test_recipe_tool_missing_suggests_unsigned(bazinga: Path, tmp_path: Path) -> None:
    if shutil.which("nix-build"):
        pytest.skip("nix-build is installed here")
    (tmp_path / ".auditee.yml").write_text(
        "enclaves:\n  - build:\n      builder: nix-build\n      output_dir: result/bin\n"
        "      enclave_file: enclave.so\n")
    with pytest.raises(BuildError, match="'nix-build', which is not installed here.*--unsigned FILE"):
        verify_mrenclave(tmp_path, bazinga / "BazingaJack.libenclave_seal.signed.so")


def test_every_metadata_blob_is_replayed(vectors: Path) -> None:
    """A file with three metadata blobs (2.4, 2.1, 1.4): all replay to the README's MRENCLAVE."""
    signed = (vectors / "enclaves" / "xlhuang37+EnclaveAsan__enclave.signed.so").read_bytes()
    report = verify_mrenclave(None, signed, unsigned=unsign(signed),
                              enclave_config=vectors / "enclaves" / "xlhuang37+EnclaveAsan.config.xml")
    assert report, report.problems()
    assert report.mrenclave.values["source"].hex() == "43fb3f2f5c106d6d19db24e4e0ef497d8e67a15c26aff996043a87a85e8b82bd"
