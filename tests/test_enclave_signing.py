"""Enclave signing keys and SIGSTRUCTs: key checks, reproducible dates, values taken from enclave.toml."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from _enclave_helpers import SRC, installed_build, signing_key
from sgx_iot.enclave.signing import load_signing_key, sign_enclave, signing_date, write_signing_key, write_sigstruct
from sgx_iot.errors import UsageError
from sgx_iot.sgx.sigstruct import Sigstruct


def write_key(path: Path, key: object) -> Path:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,  # type: ignore[attr-defined]
                            serialization.NoEncryption())  # fmt: skip
    path.write_bytes(pem)
    return path


@pytest.mark.parametrize(
    "key",
    [ec.generate_private_key(ec.SECP256R1()), rsa.generate_private_key(public_exponent=65537, key_size=2048)],
)
def test_only_rsa3072_e3_keys_sign_enclaves(tmp_path: Path, key: object) -> None:
    with pytest.raises(UsageError, match="RSA-3072 key with public exponent 3"):
        load_signing_key(write_key(tmp_path / "k.pem", key))


def test_der_keys_load(tmp_path: Path) -> None:
    der = signing_key().private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())  # fmt: skip
    (tmp_path / "k.der").write_bytes(der)
    assert load_signing_key(tmp_path / "k.der").private_numbers() == signing_key().private_numbers()


def test_source_date_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")  # 2026-01-01T00:00:00Z
    assert signing_date() == datetime.date(2026, 1, 1)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(UsageError, match="SOURCE_DATE_EPOCH"):
        signing_date()


def test_sigstruct_values(tmp_path: Path) -> None:
    day = datetime.date(2026, 2, 3)
    sigstruct = sign_enclave(signing_key(), SRC, date=day)
    sigstruct.verify()
    built = installed_build()
    assert sigstruct.enclave_hash == built.mrenclave
    assert sigstruct.date == 0x20260203 and not sigstruct.release_type
    assert sigstruct.misc_mask == built.config.misc_mask == 0xFFFFFFFF
    write_sigstruct(sigstruct, tmp_path / "s")
    assert Sigstruct.parse((tmp_path / "s").read_bytes()) == sigstruct
    assert sign_enclave(signing_key(), SRC, date=day).to_bytes() == sigstruct.to_bytes()


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "k.pem").write_text("precious")
    with pytest.raises(UsageError, match="already exists"):
        write_signing_key(tmp_path / "k.pem")
    assert (tmp_path / "k.pem").read_text() == "precious"
