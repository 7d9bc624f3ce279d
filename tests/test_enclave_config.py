"""Enclave.config.xml parsing and metadata decoding, checked against the published configurations in vectors/."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_iot.errors import FormatError
from sgx_iot.sgx.enclave_config import EnclaveConfig, Mismatch, compare, decode_metadata, parse_xml, unchecked
from sgx_iot.sgx.sdk_enclave import SdkEnclave
from sgx_iot.sgx.sdk_metadata import Metadata

PUBLISHED = [
    ("enclaves/h0mur0+IT-MPSI-with-TEE__enclave.signed.so", "enclaves/h0mur0+IT-MPSI-with-TEE.config.xml"),
    ("enclaves/xlhuang37+EnclaveAsan__enclave.signed.so", "enclaves/xlhuang37+EnclaveAsan.config.xml"),
    ("dcap/bazingajack-seal/BazingaJack.libenclave_seal.signed.so",
     "dcap/bazingajack-seal/BazingaJack.Enclave_Seal.config.xml"),
    ("ias/iot-gateway-2021-12/enclave.signed.so", "ias/iot-gateway-2021-12/enclave.config.xml"),
]


@pytest.mark.parametrize(("enclave", "xml"), PUBLISHED)
def test_every_blob_agrees_with_the_published_config(vectors: Path, enclave: str, xml: str) -> None:
    published = parse_xml((vectors / xml).read_bytes())
    signed = SdkEnclave.parse((vectors / enclave).read_bytes())
    for metadata in signed.metadata:
        assert compare(published, decode_metadata(metadata)) == []
    assert unchecked(published) == []


def test_published_values_are_read_as_the_sign_tool_reads_them(vectors: Path) -> None:
    config = parse_xml((vectors / "ias/iot-gateway-2021-12/enclave.config.xml").read_bytes())
    assert config == EnclaveConfig(
        prod_id=0, isv_svn=1234, stack_max_size=0x40000, heap_max_size=0x10000000, tcs_num=10, tcs_policy=1,
        disable_debug=0, misc_select=0, misc_mask=0xFFFFFFFF,
    )
    bazinga = parse_xml((vectors / "dcap/bazingajack-seal/BazingaJack.Enclave_Seal.config.xml").read_bytes())
    assert bazinga.heap_max_size == 67108864 and bazinga.tcs_num == 1


def test_decoded_gateway_configuration(vectors: Path) -> None:
    metadata = SdkEnclave.parse((vectors / "ias/iot-gateway-2021-06/enclave.signed.so").read_bytes()).metadata[0]
    decoded = decode_metadata(metadata)
    assert decoded.isv_svn == 1234  # README: ISVSVN 1234
    assert (decoded.tcs_num, decoded.tcs_max_num, decoded.tcs_min_pool) == (10, 10, 1)
    assert (decoded.stack_max_size, decoded.stack_min_size) == (0x40000, 0x2000)
    assert (decoded.heap_min_size, decoded.heap_init_size, decoded.heap_max_size) == (0x1000, 0x10000000, 0x10000000)
    assert decoded.disable_debug == 0  # ATTRIBUTEMASK fffffffffffffffd leaves DEBUG free


@pytest.mark.parametrize(
    ("element", "value", "field"),
    [("ISVSVN", "1235", "isv_svn"), ("HeapMaxSize", "0x20000000", "heap_max_size"), ("TCSNum", "9", "tcs_num"),
     ("DisableDebug", "1", "disable_debug"), ("StackMaxSize", "0x80000", "stack_max_size"), ("ProdID", "1", "prod_id")],
)
def test_a_changed_published_value_is_flagged(vectors: Path, element: str, value: str, field: str) -> None:
    text = (vectors / "ias/iot-gateway-2021-12/enclave.config.xml").read_text()
    start = text.index(f"<{element}>")
    end = text.index(f"</{element}>")
    changed = text[: start + len(element) + 2] + value + text[end:]
    published = parse_xml(changed.encode())
    decoded = decode_metadata(SdkEnclave.parse((vectors / "ias/iot-gateway-2021-12/enclave.signed.so").read_bytes())
                              .metadata[0])
    (mismatch,) = compare(published, decoded)
    assert mismatch.element == element and mismatch.published == int(value, 0)
    assert mismatch.decoded == getattr(decoded, field)
    assert element in str(mismatch)


def test_absent_values_are_not_compared() -> None:
    assert compare(EnclaveConfig(), EnclaveConfig(tcs_num=3)) == []
    assert compare(EnclaveConfig(tcs_num=3), EnclaveConfig(tcs_num=4)) == [Mismatch("TCSNum", 3, 4)]


def test_number_forms_and_unknown_elements() -> None:
    config = parse_xml(
        b"<?xml version='1.0'?><EnclaveConfiguration><!-- c --><TCSNum> 010 </TCSNum><HeapMaxSize>0X1000</HeapMaxSize>"
        b"<ISVSVN>0</ISVSVN><UserRegionSize>0x1000</UserRegionSize></EnclaveConfiguration>"
    )
    assert (config.tcs_num, config.heap_max_size, config.isv_svn) == (8, 0x1000, 0)  # strtoull: 010 is octal
    assert unchecked(config) == ["UserRegionSize"]
    assert config.to_dict() == {"TCSNum": 8, "HeapMaxSize": 0x1000, "ISVSVN": 0}


@pytest.mark.parametrize(
    ("xml", "field"),
    [
        (b"<EnclaveConfiguration><ProdID>1</ProdID>", "xml"),
        (b"<Config><ProdID>1</ProdID></Config>", "root"),
        (b"<EnclaveConfiguration><ProdID>-1</ProdID></EnclaveConfiguration>", "ProdID"),
        (b"<EnclaveConfiguration><ProdID>0x10000</ProdID></EnclaveConfiguration>", "ProdID"),
        (b"<EnclaveConfiguration><ProdID>08</ProdID></EnclaveConfiguration>", "ProdID"),
        (b"<EnclaveConfiguration><ProdID></ProdID></EnclaveConfiguration>", "ProdID"),
        (b"<EnclaveConfiguration><ProdID>1</ProdID><ProdID>1</ProdID></EnclaveConfiguration>", "ProdID"),
        (b"<EnclaveConfiguration><ProdID a='1'>1</ProdID></EnclaveConfiguration>", "ProdID"),
        (b"<EnclaveConfiguration><TCSPolicy>2</TCSPolicy></EnclaveConfiguration>", "TCSPolicy"),
        (b"<EnclaveConfiguration>text<ProdID>1</ProdID></EnclaveConfiguration>", "EnclaveConfiguration"),
        (b'<!DOCTYPE x [<!ENTITY a "aaaa">]><EnclaveConfiguration><ProdID>&a;</ProdID></EnclaveConfiguration>', "xml"),
        (b"\xff\xfe<", "xml"),
    ],
)
def test_bad_xml_is_refused(xml: bytes, field: str) -> None:
    with pytest.raises(FormatError) as info:
        parse_xml(xml)
    assert info.value.structure == "EnclaveConfig" and info.value.field == field


def test_old_metadata_is_not_decoded(vectors: Path) -> None:
    blob = bytearray(SdkEnclave.parse((vectors / PUBLISHED[2][0]).read_bytes()).metadata[0].raw)
    blob[8:16] = ((1 << 32) | 3).to_bytes(8, "little")
    with pytest.raises(FormatError, match="predates"):
        decode_metadata(Metadata.parse(bytes(blob)))


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda name, value: f"<EnclaveConfiguration><{name}>{value}</{name}></EnclaveConfiguration>".encode(),
        st.sampled_from(["ProdID", "TCSNum", "HeapMaxSize", "Other"]),
        st.text(max_size=20),
    ),
))
def test_fuzz_parse_xml(data: bytes) -> None:
    try:
        parse_xml(data)
    except FormatError:
        pass
