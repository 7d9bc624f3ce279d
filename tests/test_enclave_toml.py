"""enclave.toml: the shipped configuration's values, and strict refusal of bad files (naming the key)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_iot.enclave.config import EnclaveConfig, load_config
from sgx_iot.errors import FormatError
from sgx_iot.sgx.attributes import Attributes

SRC = Path(__file__).resolve().parent.parent / "src"
SHIPPED = (SRC / "sgx_iot/enclave/enclave.toml").read_text()


def test_shipped_configuration() -> None:
    config = load_config(SRC)
    assert (config.isv_prod_id, config.isv_svn, config.misc_select, config.misc_mask) == (0, 1, 0, 0xFFFFFFFF)
    assert config.attributes == Attributes(0x4, 0x3)
    # sgx_sign's default mask (SGX_FORMATS §3); DEBUG left free because disable_debug = false.
    assert config.attribute_mask == Attributes(0xFF00FFFFFFFFFFFD, 0xFFFFFFFFFFFFFF1B)
    assert config.enclave_size == 0x400000 and config.tcs_count == 1


def test_disable_debug_adds_debug_to_the_mask() -> None:
    config = EnclaveConfig.from_toml(SHIPPED.replace("disable_debug = false", "disable_debug = true"))
    assert config.attribute_mask.flags == 0xFF00FFFFFFFFFFFF


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("isv_svn = 1\n", "", "identity.isv_svn"),
        ("[layout]\n", "[layout]\ncolour = 1\n", "layout.colour"),
        ("isv_svn = 1", "isv_svn = 65536", "identity.isv_svn"),
        ("isv_svn = 1", "isv_svn = -1", "identity.isv_svn"),
        ("isv_svn = 1", 'isv_svn = "1"', "identity.isv_svn"),
        ('misc_mask = "0xffffffff"', 'misc_mask = "0x1ffffffff"', "identity.misc_mask"),
        ('misc_mask = "0xffffffff"', 'misc_mask = "ffff"', "identity.misc_mask"),
        ('misc_mask = "0xffffffff"', 'misc_mask = "0xzz"', "identity.misc_mask"),
        ("disable_debug = false", "disable_debug = 0", "identity.disable_debug"),
        ('enclave_size = "0x00400000"', 'enclave_size = "0x00400001"', "layout.enclave_size"),
        ("nssa = 2", "nssa = 0", "layout.nssa"),
        ('attributes_flags = "0x0000000000000004"', 'attributes_flags = "0x0000000000000006"',
         "identity.attributes_flags"),
        ('attributes_flags = "0x0000000000000004"', 'attributes_flags = "0x0000000000000000"',
         "identity.attributes_flags"),
        ("isv_svn = 1", "isv_svn = 1 1", "(document)"),
        ("isv_prod_id = 0", "isv_prod_id = true", "identity.isv_prod_id"),
    ],
)
def test_bad_values_are_refused_naming_the_key(old: str, new: str, field: str) -> None:
    assert old in SHIPPED
    with pytest.raises(FormatError) as info:
        EnclaveConfig.from_toml(SHIPPED.replace(old, new, 1))
    assert info.value.field == field


def test_missing_file_is_a_format_error(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="cannot read"):
        load_config(tmp_path)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_any_text_parses_or_is_refused_with_format_error(text: str) -> None:
    try:
        EnclaveConfig.from_toml(text)
    except FormatError:
        pass
