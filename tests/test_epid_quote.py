"""EPID quote (``sgx_quote_t``): the iot-gateway quote.bin and the IAS quote bodies (vectors/README.md)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sgx_iot.errors import FormatError
from sgx_iot.sgx.attributes import Attributes
from sgx_iot.sgx.epid_quote import EpidQuote
from sgx_iot.sgx.report import ReportBody


def _ias_body(vectors: Path, folder: str) -> bytes:
    body = json.loads((vectors / "ias" / folder / "ias_response_body.exact.json").read_bytes())
    return base64.b64decode(body["isvEnclaveQuoteBody"])


def test_full_quote_2021_12(vectors: Path) -> None:
    raw = (vectors / "ias" / "iot-gateway-2021-12" / "quote.bin").read_bytes()
    assert len(raw) == 1116
    quote = EpidQuote.parse(raw)
    assert quote.to_bytes() == raw
    assert (quote.version, quote.signature_len, len(quote.signature)) == (2, 680, 680)
    assert not quote.is_body_only
    assert quote.body_bytes() == _ias_body(vectors, "iot-gateway-2021-12")
    body = quote.report_body
    assert body.mr_enclave.hex() == "72cfdb1e92ca2354857bc3ddd5133888fc122bc0eb467e42b80c61bdf027f43f"
    assert body.mr_signer.hex() == "001d5f40ffe3537fee57a1ae3023850296ef24ea287a0c38ba4fd23615f32a06"
    assert body.isv_svn == 1234
    assert body.report_data.hex() == (
        "85ca7c890680699863423c2d217841b4bc0ba397ed59aa473c905a0064a44425"
        "7c02bcf97c259df5df9058d012bea6f6269c125c4fc41afbf19605df3857f4c0"
    )


def test_ias_quote_body_2021_06(vectors: Path) -> None:
    raw = _ias_body(vectors, "iot-gateway-2021-06")
    assert len(raw) == 432
    quote = EpidQuote.parse(raw)
    assert quote.is_body_only and quote.signature_len is None
    assert quote.to_bytes() == raw
    assert (quote.version, quote.sign_type, quote.epid_group_id.hex(), quote.qe_svn, quote.pce_svn) == (
        2, 0, "5b0b0000", 11, 10,
    )
    body = quote.report_body
    assert body.attributes == Attributes(0x7, 0x7) and body.attributes.debug
    assert body.mr_enclave.hex() == "4985c91b6a9cf7a4d56384d25ed9008d9be7f61fa108e4e2669247b11acc013f"
    assert body.mr_signer.hex() == "3db0e0741cfed690b4ce6499e3fb078dfb3918976747d282f6818cf387dccb8e"
    assert (body.isv_prod_id, body.isv_svn) == (0, 1234)
    assert body.cpu_svn.hex() == "0911ffff010200000000000000000000"
    assert body.report_data.hex() == (
        "bb7e7fc78e1fce2053a7d87bc7ee4bb5cd6997534529c0ce1fcbb9bc0db8dee9"
        "b0aed3032e9304dd9400b1cf177ecca680947201850ae0cd11b0f23f3495cbf7"
    )


def test_signature_len_mismatch_and_truncation(vectors: Path) -> None:
    raw = (vectors / "ias" / "iot-gateway-2021-12" / "quote.bin").read_bytes()
    with pytest.raises(FormatError) as info:
        EpidQuote.parse(raw[:-1])
    assert (info.value.field, info.value.offset) == ("signature_len", 432)
    with pytest.raises(FormatError) as info:
        EpidQuote.parse(raw + b"\x00")
    assert info.value.field == "signature_len"
    with pytest.raises(FormatError) as info:
        EpidQuote.parse(raw[:434])
    assert info.value.field == "signature_len"
    for cut, field in [(0, "version"), (3, "sign_type"), (10, "pce_svn"), (20, "basename"), (100, "report_body")]:
        with pytest.raises(FormatError) as info:
            EpidQuote.parse(raw[:cut])
        assert info.value.field == field


def test_offsets() -> None:
    raw = bytearray(436)
    raw[0:2] = b"\x02\x00"
    raw[2:4] = b"\x01\x00"
    raw[12:16] = b"\x01\x02\x03\x04"
    raw[48 + 64] = 0xAB
    quote = EpidQuote.parse(bytes(raw))
    assert (quote.version, quote.sign_type, quote.xeid) == (2, 1, 0x04030201)
    assert quote.report_body.mr_enclave[0] == 0xAB
    assert quote.signature_len == 0 and quote.signature == b""


@given(st.binary(min_size=432, max_size=432), st.one_of(st.none(), st.binary(max_size=100)))
def test_round_trip(body: bytes, signature: bytes | None) -> None:
    raw = body if signature is None else body + len(signature).to_bytes(4, "little") + signature
    quote = EpidQuote.parse(raw)
    assert quote.to_bytes() == raw
    assert EpidQuote.parse(quote.to_bytes()) == quote


def test_constructor_checks() -> None:
    with pytest.raises(ValueError):
        EpidQuote(signature=b"x")
    with pytest.raises(ValueError):
        EpidQuote(signature_len=2, signature=b"x")
    built = EpidQuote(report_body=ReportBody(isv_svn=7), signature_len=1, signature=b"x")
    assert EpidQuote.parse(built.to_bytes()) == built
