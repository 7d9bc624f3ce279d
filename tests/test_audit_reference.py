"""Reference values written as the verifier policy's [enclave] table, and read back by the verifier's parser."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from sgx_iot.audit import ReferenceValues, merge_into_policy, reference_values, write_reference
from sgx_iot.enclave.image import installed_source_root
from sgx_iot.errors import FormatError, UsageError, VerificationError
from sgx_iot.verify.policy import Policy

GW06_MRENCLAVE = "4985c91b6a9cf7a4d56384d25ed9008d9be7f61fa108e4e2669247b11acc013f"
GW06_MRSIGNER = "3db0e0741cfed690b4ce6499e3fb078dfb3918976747d282f6818cf387dccb8e"
VALUES = ReferenceValues(bytes.fromhex(GW06_MRENCLAVE), bytes.fromhex(GW06_MRSIGNER), 0, 1234, "source x")


def unsign(signed: bytes) -> bytes:
    section = ELFFile(io.BytesIO(signed)).get_section_by_name(".note.sgxmeta")
    start, end = section["sh_offset"] + 25, section["sh_offset"] + section["sh_size"]
    return signed[:start] + bytes(end - start) + signed[end:]


def test_section_parses_as_a_policy_with_exactly_these_values() -> None:
    text = VALUES.to_toml()
    assert text.splitlines()[1:] == [
        "[enclave]", f'mrenclave = ["{GW06_MRENCLAVE}"]', f'mrsigner = ["{GW06_MRSIGNER}"]', "isv_prod_id = 0",
        "min_isv_svn = 1234",
    ]
    policy = Policy.from_toml(text)
    assert policy.mrenclaves == {VALUES.mrenclave} and policy.mrsigners == {VALUES.mrsigner}
    assert (policy.isv_prod_id, policy.min_isv_svn) == (0, 1234)


def test_merge_replaces_only_the_enclave_table(tmp_path: Path) -> None:
    existing = ('[trust]\nintel = true\n\n[enclave]\nmrenclave = ["' + "11" * 32 + '"]\n\n'
                '[tcb]\nallow_debug = true\n')
    merged = merge_into_policy(existing, VALUES)
    policy = Policy.from_toml(merged)
    assert policy.mrenclaves == {VALUES.mrenclave} and policy.allow_debug
    assert "11" * 32 not in merged
    again = merge_into_policy(merged, VALUES)
    assert again == merged, "merging twice is idempotent (the provenance comment is replaced, not stacked)"
    appended = merge_into_policy("[tcb]\nallow_debug = true\n", VALUES)
    assert Policy.from_toml(appended).allow_debug and Policy.from_toml(appended).mrenclaves == {VALUES.mrenclave}
    with pytest.raises(UsageError, match="without an \\[enclave\\] table header"):
        merge_into_policy('enclave.mrenclave = ["' + "11" * 32 + '"]\n', VALUES)
    with pytest.raises(FormatError, match="nested too deeply"):  # tomllib's RecursionError used to escape
        merge_into_policy("a = " + "[" * 30_000, VALUES)


def test_write_reference_atomically_and_validated(tmp_path: Path) -> None:
    out = tmp_path / "policy.toml"
    policy = write_reference(out, VALUES)
    assert Policy.load(out) == policy and policy.mrenclaves == {VALUES.mrenclave}
    out.write_text("[tcb]\nallowed_debug = true\n")  # a typo: the result would not be a valid policy
    with pytest.raises(FormatError):
        write_reference(out, VALUES)
    assert out.read_text() == "[tcb]\nallowed_debug = true\n", "a refused write leaves the file as it was"


def test_write_reference_over_a_binary_file_is_a_format_error(tmp_path: Path) -> None:
    """Not UTF-8: used to escape as UnicodeDecodeError (a traceback from `audit reference --out`)."""
    out = tmp_path / "enclave.signed.so"
    out.write_bytes(b"\x7fELF\xff\xfe" + bytes(100))
    with pytest.raises(FormatError, match="not UTF-8"):
        write_reference(out, VALUES)
    nested = tmp_path / "policy.toml"
    nested.write_text("[enclave]\nisv_prod_id = 0\n[x]\na = " + "[" * 30_000)
    with pytest.raises(FormatError, match="nested too deeply"):
        write_reference(nested, VALUES)
    assert out.read_bytes() == b"\x7fELF\xff\xfe" + bytes(100)


@pytest.mark.vectors
def test_reference_from_signed_sdk_enclave(vectors: Path) -> None:
    signed = (vectors / "ias" / "iot-gateway-2021-06" / "enclave.signed.so").read_bytes()
    values = reference_values(None, signed, unsigned=unsign(signed))
    assert (values.mrenclave.hex(), values.mrsigner and values.mrsigner.hex()) == (GW06_MRENCLAVE, GW06_MRSIGNER)
    assert (values.isv_prod_id, values.isv_svn) == (0, 1234)
    tampered = bytearray(unsign(signed))
    text = ELFFile(io.BytesIO(signed)).get_section_by_name(".text")
    tampered[text["sh_offset"] + 8] ^= 0xFF
    with pytest.raises(VerificationError) as info:
        reference_values(None, signed, unsigned=bytes(tampered))
    assert info.value.code == "REPRODUCIBILITY_FAILED"


def test_reference_from_sgx_iot_source_alone(tmp_path: Path) -> None:
    shutil.copytree(installed_source_root() / "sgx_iot", tmp_path / "src" / "sgx_iot",
                    ignore=shutil.ignore_patterns("__pycache__"))
    values = reference_values(tmp_path)
    assert values.mrsigner is None and values.isv_prod_id == 0 and values.isv_svn is not None
    assert Policy.from_toml(values.to_toml()).mrenclaves == {values.mrenclave}
    with pytest.raises(UsageError):
        reference_values(None)
    with pytest.raises(UsageError, match="needs the signed one"):
        reference_values(tmp_path, unsigned=b"\x7fELF")
