"""Fixed-size SGX structures: attributes, report body, REPORT, TARGETINFO, key request (SGX_FORMATS.md §4–5)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sgx_iot.errors import FormatError
from sgx_iot.sgx._codec import Reader
from sgx_iot.sgx.attributes import AttributeFlags, Attributes
from sgx_iot.sgx.dcap_quote import DcapQuote
from sgx_iot.sgx.keyrequest import (
    TSEAL_DEFAULT_FLAGSMASK,
    TSEAL_DEFAULT_MISCMASK,
    KeyName,
    KeyPolicy,
    KeyRequest,
    key_policy_names,
    seal_key_request,
)
from sgx_iot.sgx.report import Report, ReportBody, TargetInfo

FIXED = [Attributes, ReportBody, Report, TargetInfo, KeyRequest]


def _put(size: int, offset: int, value: bytes) -> bytes:
    data = bytearray(size)
    data[offset : offset + len(value)] = value
    return bytes(data)


# --- sizes and round trips ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "size"), [(Attributes, 16), (ReportBody, 384), (Report, 432), (TargetInfo, 512), (KeyRequest, 512)]
)
def test_sizes(cls: type, size: int) -> None:
    assert cls.SIZE == size
    assert len(cls().to_bytes()) == size


@pytest.mark.parametrize("cls", FIXED)
@given(data=st.data())
def test_any_bytes_round_trip(cls: type, data: st.DataObject) -> None:
    raw = data.draw(st.binary(min_size=cls.SIZE, max_size=cls.SIZE))
    parsed = cls.parse(raw)
    assert parsed.to_bytes() == raw
    assert cls.parse(parsed.to_bytes()) == parsed


@pytest.mark.parametrize("cls", FIXED)
@pytest.mark.parametrize("delta", [-1, 1, -100])
def test_wrong_size_is_format_error(cls: type, delta: int) -> None:
    size = max(cls.SIZE + delta, 0)
    with pytest.raises(FormatError) as info:
        cls.parse(bytes(size))
    assert info.value.structure == cls.__name__
    assert info.value.field == "size"


@given(
    mr_enclave=st.binary(min_size=32, max_size=32),
    report_data=st.binary(min_size=64, max_size=64),
    isv_svn=st.integers(0, 0xFFFF),
    flags=st.integers(0, 2**64 - 1),
)
def test_built_body_round_trips(mr_enclave: bytes, report_data: bytes, isv_svn: int, flags: int) -> None:
    body = ReportBody(mr_enclave=mr_enclave, report_data=report_data, isv_svn=isv_svn, attributes=Attributes(flags, 3))
    assert ReportBody.parse(body.to_bytes()) == body
    report = Report(body=body, key_id=bytes(range(32)), mac=b"\x01" * 16)
    assert Report.parse(report.to_bytes()) == report


def test_constructor_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        ReportBody(mr_enclave=bytes(31))
    with pytest.raises(ValueError):
        ReportBody(isv_svn=0x10000)
    with pytest.raises(ValueError):
        Attributes(-1, 0)
    with pytest.raises(ValueError):
        KeyRequest(key_name=1 << 16)


# --- offsets from the spec (SGX_FORMATS.md §5, §4) -------------------------------------------------------------


def test_report_body_offsets() -> None:
    assert ReportBody.parse(_put(384, 16, b"\x01\x02\x03\x04")).misc_select == 0x04030201
    assert ReportBody.parse(_put(384, 32, b"\xaa" * 16)).isv_ext_prod_id == b"\xaa" * 16
    assert ReportBody.parse(_put(384, 48, b"\x07")).attributes == Attributes(7, 0)
    assert ReportBody.parse(_put(384, 56, b"\xe7")).attributes == Attributes(0, 0xE7)
    assert ReportBody.parse(_put(384, 64, b"\x11" * 32)).mr_enclave == b"\x11" * 32
    assert ReportBody.parse(_put(384, 128, b"\x22" * 32)).mr_signer == b"\x22" * 32
    assert ReportBody.parse(_put(384, 192, b"\x33" * 64)).config_id == b"\x33" * 64
    assert ReportBody.parse(_put(384, 256, b"\x01\x02")).isv_prod_id == 0x0201
    assert ReportBody.parse(_put(384, 258, b"\xd2\x04")).isv_svn == 1234
    assert ReportBody.parse(_put(384, 260, b"\x05")).config_svn == 5
    assert ReportBody.parse(_put(384, 304, b"\x44" * 16)).isv_family_id == b"\x44" * 16
    assert ReportBody.parse(_put(384, 320, b"\x55" * 64)).report_data == b"\x55" * 64
    for offset, name in [(20, "reserved1"), (96, "reserved2"), (160, "reserved3"), (262, "reserved4")]:
        body = ReportBody.parse(_put(384, offset, b"\xff"))
        assert getattr(body, name)[0] == 0xFF


def test_report_and_targetinfo_offsets() -> None:
    report = Report.parse(_put(432, 384, b"\x01" * 32 + b"\x02" * 16))
    assert report.key_id == b"\x01" * 32 and report.mac == b"\x02" * 16
    assert TargetInfo.parse(_put(512, 0, b"\x09" * 32)).mr_enclave == b"\x09" * 32
    assert TargetInfo.parse(_put(512, 32, b"\x05")).attributes.flags == 5
    assert TargetInfo.parse(_put(512, 48, b"\x01\x02")).reserved1 == b"\x01\x02"
    assert TargetInfo.parse(_put(512, 50, b"\x07\x00")).config_svn == 7
    assert TargetInfo.parse(_put(512, 52, b"\x01\x00\x00\x80")).misc_select == 0x80000001
    assert TargetInfo.parse(_put(512, 64, b"\x06" * 64)).config_id == b"\x06" * 64
    assert TargetInfo.parse(_put(512, 511, b"\x01")).reserved3[-1] == 1


def test_key_request_offsets() -> None:
    req = KeyRequest.parse(
        _put(512, 0, b"\x04\x00\x02\x00\xd2\x04")
    )
    assert (req.key_name, req.key_policy, req.isv_svn) == (KeyName.SEAL, KeyPolicy.MRSIGNER, 1234)
    assert KeyRequest.parse(_put(512, 8, b"\x0b" * 16)).cpu_svn == b"\x0b" * 16
    assert KeyRequest.parse(_put(512, 24, b"\x0b")).attribute_mask.flags == 0xB
    assert KeyRequest.parse(_put(512, 40, b"\x01" * 32)).key_id == b"\x01" * 32
    assert KeyRequest.parse(_put(512, 72, b"\x00\x00\x00\xf0")).misc_mask == 0xF0000000
    assert KeyRequest.parse(_put(512, 76, b"\x03")).config_svn == 3
    assert KeyRequest.parse(_put(512, 78, b"\x01")).reserved2[0] == 1


# --- attributes and key request enums --------------------------------------------------------------------------


def test_attribute_flags() -> None:
    assert int(AttributeFlags.DEBUG) == 2 and int(AttributeFlags.AEXNOTIFY) == 0x400
    attrs = Attributes(0x7, 0x7)
    assert attrs.debug and attrs.mode64bit
    assert attrs.flag_names() == ["INIT", "DEBUG", "MODE64BIT"]
    assert Attributes(0x4 | 0x100 | (1 << 63), 0).flag_names() == ["MODE64BIT", "0x100", "0x8000000000000000"]
    assert not Attributes(0x5, 0xE7).debug
    assert Attributes.parse(Attributes(0xFF00FFFFFFFFFFFD, 0xFFFFFFFFFFFFFF1B).to_bytes()).flags == 0xFF00FFFFFFFFFFFD


def test_seal_key_request_defaults() -> None:
    req = seal_key_request(key_id=b"\x01" * 32, cpu_svn=b"\x02" * 16, isv_svn=3)
    assert req.key_name == 4 and req.key_policy == 2
    assert req.attribute_mask == Attributes(0xFF0000000000000B, 0) == Attributes(TSEAL_DEFAULT_FLAGSMASK, 0)
    assert req.misc_mask == 0xF0000000 == TSEAL_DEFAULT_MISCMASK
    assert key_policy_names(0x3 | 0x40) == ["MRENCLAVE", "MRSIGNER", "0x40"]


# --- reader ----------------------------------------------------------------------------------------------------


def test_reader_names_field_and_offset() -> None:
    reader = Reader(b"\x01\x00\x02\x00\x00", "Thing", base=100)
    assert reader.u16("a") == 1
    with pytest.raises(FormatError) as info:
        reader.u32("b")
    assert (info.value.structure, info.value.field, info.value.offset) == ("Thing", "b", 102)
    assert reader.bytes(2, "c") == b"\x02\x00"
    with pytest.raises(FormatError) as info:
        reader.expect_end()
    assert info.value.offset == 104


# --- real vectors ----------------------------------------------------------------------------------------------


def test_bazingajack_report_body_equals_quote_body(vectors: Path) -> None:
    folder = vectors / "dcap" / "bazingajack-seal"
    report = Report.parse((folder / "BazingaJack.report.dat").read_bytes())
    quote = DcapQuote.parse((folder / "BazingaJack.quote.dat").read_bytes())
    assert report.body == quote.report_body
    assert report.body.mr_enclave.hex() == "d17c8e8a6cb4629e581865693d12a25f3bb0072dfd7b5cb1d12df7f850fdf0f6"
    assert report.body.mr_signer.hex() == "ef7de2edeb583a6ca05d147b7b3e41ec6f888e924e877d5b6c034d367c435a1c"
    assert (report.body.isv_prod_id, report.body.isv_svn) == (0, 0)


def test_zktee_key_request(vectors: Path) -> None:
    blob = (vectors / "sealed" / "zkTee.sealed_data_blob.txt").read_bytes()
    req = KeyRequest.parse(blob[:512])
    assert req.key_name == KeyName.SEAL
    assert req.key_policy == KeyPolicy.MRSIGNER
    assert req.cpu_svn.hex() == "1213ffff010200000000000000000000"
    assert req.attribute_mask == Attributes(0xFF0000000000000B, 0)
    assert req.misc_mask == 0xF0000000
    assert req.to_bytes() == blob[:512]
