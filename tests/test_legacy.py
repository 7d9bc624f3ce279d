"""The original gateway's evidence checked end to end (library level; the CLI is in test_verify_cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _vector_helpers import g06, g12  # noqa: F401  (fixtures)

from sgx_iot.errors import FormatError, UsageError
from sgx_iot.verify.legacy import Outcome, verify_legacy_gateway

pytestmark = pytest.mark.vectors


def _outcomes(verdict: object) -> dict[str, Outcome]:
    return {c.name: c.outcome for c in verdict.checks}  # type: ignore[attr-defined]


def test_2021_06_everything_passes(g06: Path) -> None:
    verdict = verify_legacy_gateway(
        (g06 / "ias_report.json").read_bytes(),
        signed_enclave=(g06 / "enclave.signed.so").read_bytes(),
        data=(g06 / "Sensor_Data").read_bytes(),
        signature=(g06 / "Sensor_Data.signature").read_bytes(),
    )
    assert verdict.ok
    outcomes = _outcomes(verdict)
    for name in ("IAS signature", "SIGSTRUCT signature", "MRENCLAVE replay", "MRENCLAVE", "MRSIGNER", "ISVPRODID",
                 "ISVSVN", "public key", "data signature"):  # fmt: skip
        assert outcomes[name] is Outcome.PASS, name
    assert outcomes["quote status"] is Outcome.INFO
    assert outcomes["debug"] is Outcome.INFO
    assert verdict.public_key_sec1_hex == (
        "04e9deb80dbcb9cb1fcec02945539769cdb54beec77bd8a75320ce1f8ec77f7ebb"
        "f7cb95343ff2b011cde00a8501729480a6cc7e17cfb10094dd04932e03d3aeb0"
    )
    assert verdict.public_key_pem is not None and verdict.public_key_pem.startswith("-----BEGIN PUBLIC KEY-----")


def test_2021_12_enclave_has_another_mrsigner(g12: Path) -> None:
    verdict = verify_legacy_gateway(
        (g12 / "ias_report.json").read_bytes(), signed_enclave=(g12 / "enclave.signed.so").read_bytes()
    )
    assert not verdict.ok
    outcomes = _outcomes(verdict)
    assert outcomes["MRSIGNER"] is Outcome.FAIL
    assert outcomes["MRENCLAVE"] is Outcome.PASS
    assert outcomes["MRENCLAVE replay"] is Outcome.PASS
    sentence = next(c.sentence for c in verdict.checks if c.name == "MRSIGNER")
    assert "7b9b32fa1d255acf8ebb245308b7ce7a1f755a5d325a64af1309f2e9c686e00d" in sentence
    assert "001d5f40ffe3537fee57a1ae3023850296ef24ea287a0c38ba4fd23615f32a06" in sentence


def test_2021_06_report_against_the_2021_12_enclave(g06: Path, g12: Path) -> None:
    verdict = verify_legacy_gateway(
        (g06 / "ias_report.json").read_bytes(), signed_enclave=(g12 / "enclave.signed.so").read_bytes()
    )
    outcomes = _outcomes(verdict)
    assert outcomes["MRENCLAVE"] is Outcome.FAIL
    assert outcomes["MRSIGNER"] is Outcome.FAIL
    assert not verdict.ok


def test_2021_06_signature_does_not_verify_with_the_2021_12_key(g06: Path, g12: Path) -> None:
    verdict = verify_legacy_gateway(
        (g12 / "ias_response_body.exact.json").read_bytes(),
        headers=(g12 / "ias_response_headers.extracted.json").read_bytes(),
        data=(g06 / "Sensor_Data").read_bytes(),
        signature=(g06 / "Sensor_Data.signature").read_bytes(),
    )
    outcomes = _outcomes(verdict)
    assert outcomes["IAS signature"] is Outcome.PASS
    assert outcomes["public key"] is Outcome.PASS
    assert outcomes["data signature"] is Outcome.FAIL
    assert not verdict.ok


def test_signature_that_is_not_der_fails(g06: Path) -> None:
    verdict = verify_legacy_gateway(
        (g06 / "ias_report.json").read_bytes(), data=b"x", signature=b"\x00" * 64
    )
    assert _outcomes(verdict)["data signature"] is Outcome.FAIL
    sentence = next(c.sentence for c in verdict.checks if c.name == "data signature")
    assert "not a DER ECDSA signature" in sentence  # said as such, not as "does not verify"


def test_tampered_report_fails_its_ias_check_but_lists_the_rest(g06: Path) -> None:
    stored = json.loads((g06 / "ias_report.json").read_bytes())
    stored["body"]["advisoryIDs"] = []
    verdict = verify_legacy_gateway(json.dumps(stored).encode())
    outcomes = _outcomes(verdict)
    assert outcomes["IAS signature"] is Outcome.FAIL
    assert "IAS_BAD_SIGNATURE" in verdict.checks[0].sentence
    assert "public key" in outcomes
    assert not verdict.ok
    assert verdict.to_dict()["ok"] is False


def test_data_without_signature_is_a_usage_error(g06: Path) -> None:
    with pytest.raises(UsageError):
        verify_legacy_gateway((g06 / "ias_report.json").read_bytes(), data=b"x")


def test_enclave_that_is_not_an_elf_is_a_format_error(g06: Path) -> None:
    with pytest.raises(FormatError):
        verify_legacy_gateway((g06 / "ias_report.json").read_bytes(), signed_enclave=b"not an elf")
