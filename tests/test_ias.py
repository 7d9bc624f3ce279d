"""IAS attestation verification reports: parsing the three input forms and verifying Intel's signature."""

from __future__ import annotations

import base64
import datetime
import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from sgx_iot.errors import FormatError, VerificationError
from sgx_iot.verify.ias import IasReport, verify_ias_report
from sgx_iot.verify.roots import IAS_REPORT_SIGNING_CA_SHA256, ias_report_signing_ca

pytestmark = pytest.mark.vectors

UTC = datetime.UTC
ADVISORIES_2021_06 = (
    "INTEL-SA-00161",
    "INTEL-SA-00381",
    "INTEL-SA-00389",
    "INTEL-SA-00320",
    "INTEL-SA-00329",
    "INTEL-SA-00220",
    "INTEL-SA-00270",
    "INTEL-SA-00293",
)


def _dir(vectors: Path, which: str) -> Path:
    return vectors / "ias" / f"iot-gateway-{which}"


def _exact(vectors: Path, which: str) -> IasReport:
    folder = _dir(vectors, which)
    return IasReport.parse(
        (folder / "ias_response_body.exact.json").read_bytes(),
        (folder / "ias_response_headers.extracted.json").read_bytes(),
    )


def _stored(vectors: Path, which: str) -> IasReport:
    return IasReport.parse((_dir(vectors, which) / "ias_report.json").read_bytes())


# --- the pinned CA ----------------------------------------------------------------------------------------------


def test_pinned_ca_equals_the_vectors_root_by_fingerprint(vectors: Path) -> None:
    pem = (vectors / "roots/Intel_SGX_Attestation_Report_Signing_CA.pem").read_bytes()
    expected = x509.load_pem_x509_certificate(pem)
    pinned = ias_report_signing_ca()
    readme_fingerprint = "7b42e41ec43b91db834a065de4f98a13c44d695570e839cfa8921e584e40735d"
    assert pinned.fingerprint(hashes.SHA256()).hex() == readme_fingerprint
    assert pinned == expected
    assert IAS_REPORT_SIGNING_CA_SHA256 == readme_fingerprint


# --- positive vectors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["2021-06", "2021-12"])
@pytest.mark.parametrize("form", ["stored", "exact"])
def test_real_reports_verify(vectors: Path, which: str, form: str) -> None:
    report = _stored(vectors, which) if form == "stored" else _exact(vectors, which)
    result = verify_ias_report(report)
    assert result.ca_sha256 == IAS_REPORT_SIGNING_CA_SHA256
    assert "Intel SGX Attestation Report Signing" in result.leaf_subject
    exact = (_dir(vectors, which) / "ias_response_body.exact.json").read_bytes()
    assert result.signed_bytes == exact  # the stored form's compact re-encoding gives the signed bytes
    assert report.reencoded is (form == "stored")


def test_stored_body_length_equals_content_length(vectors: Path) -> None:
    for which, length in (("2021-06", 1180), ("2021-12", 1196)):
        assert len(_stored(vectors, which).signed_body) == length


def test_reserialized_bare_body_with_headers_verifies(vectors: Path) -> None:
    folder = _dir(vectors, "2021-12")
    report = IasReport.parse(
        (folder / "ias_response.json").read_bytes(), (folder / "ias_response_headers.json").read_bytes()
    )
    result = verify_ias_report(report)
    assert result.signed_bytes == (folder / "ias_response_body.exact.json").read_bytes()
    assert result.reencoded


def test_2021_06_fields(vectors: Path) -> None:
    report = _stored(vectors, "2021-06")
    assert report.id == "184055153270543361786702495766189427492"
    assert report.timestamp == datetime.datetime(2021, 6, 3, 20, 55, 31, 491437, tzinfo=UTC)
    assert report.version == 4
    assert report.isv_enclave_quote_status == "GROUP_OUT_OF_DATE"
    assert report.advisory_ids == ADVISORIES_2021_06
    assert report.advisory_url == "https://security-center.intel.com"
    assert report.platform_info_blob is not None and report.platform_info_blob[:2] == b"\x15\x02"
    quote = report.quote
    assert (quote.version, quote.sign_type, quote.qe_svn, quote.pce_svn) == (2, 0, 11, 10)
    assert quote.epid_group_id.hex() == "5b0b0000"
    body = quote.report_body
    assert body.mr_enclave.hex() == "4985c91b6a9cf7a4d56384d25ed9008d9be7f61fa108e4e2669247b11acc013f"
    assert body.mr_signer.hex() == "3db0e0741cfed690b4ce6499e3fb078dfb3918976747d282f6818cf387dccb8e"
    assert (body.isv_prod_id, body.isv_svn) == (0, 1234)
    assert body.cpu_svn.hex() == "0911ffff010200000000000000000000"
    assert (body.attributes.flags, body.attributes.xfrm) == (0x7, 0x7)
    assert body.attributes.debug
    assert body.report_data.hex() == (
        "bb7e7fc78e1fce2053a7d87bc7ee4bb5cd6997534529c0ce1fcbb9bc0db8dee9"
        "b0aed3032e9304dd9400b1cf177ecca680947201850ae0cd11b0f23f3495cbf7"
    )


def test_2021_12_fields(vectors: Path) -> None:
    report = _exact(vectors, "2021-12")
    assert report.timestamp == datetime.datetime(2021, 12, 11, 2, 18, 20, 806444, tzinfo=UTC)
    assert report.isv_enclave_quote_status == "GROUP_OUT_OF_DATE"
    assert set(report.advisory_ids) == set(ADVISORIES_2021_06) | {"INTEL-SA-00477"}
    assert len(report.advisory_ids) == 9
    body = report.quote.report_body
    assert body.mr_enclave.hex() == "72cfdb1e92ca2354857bc3ddd5133888fc122bc0eb467e42b80c61bdf027f43f"
    assert body.mr_signer.hex() == "001d5f40ffe3537fee57a1ae3023850296ef24ea287a0c38ba4fd23615f32a06"
    assert body.isv_svn == 1234
    assert body.report_data.hex().startswith("85ca7c890680699863423c2d217841b4")
    quote_bin = (_dir(vectors, "2021-12") / "quote.bin").read_bytes()
    assert quote_bin[:432] == report.isv_enclave_quote_body


# --- negative cases ---------------------------------------------------------------------------------------------


def test_tampered_exact_body_byte_is_a_bad_signature(vectors: Path) -> None:
    folder = _dir(vectors, "2021-06")
    body = bytearray((folder / "ias_response_body.exact.json").read_bytes())
    position = body.index(b"184055153270543361786702495766189427492") + 5
    body[position] = ord("9") if body[position] != ord("9") else ord("8")
    report = IasReport.parse(bytes(body), (folder / "ias_response_headers.extracted.json").read_bytes())
    with pytest.raises(VerificationError) as err:
        verify_ias_report(report)
    assert err.value.code == "IAS_BAD_SIGNATURE"


def test_tampered_stored_status_is_a_bad_signature(vectors: Path) -> None:
    stored = json.loads((_dir(vectors, "2021-06") / "ias_report.json").read_bytes())
    stored["body"]["isvEnclaveQuoteStatus"] = "OK"
    with pytest.raises(VerificationError) as err:
        verify_ias_report(IasReport.parse(json.dumps(stored).encode()))
    assert err.value.code == "IAS_BAD_SIGNATURE"


def test_signature_of_another_report_is_refused(vectors: Path) -> None:
    other = json.loads((_dir(vectors, "2021-12") / "ias_response_headers.extracted.json").read_bytes())
    report = IasReport.parse((_dir(vectors, "2021-06") / "ias_response_body.exact.json").read_bytes(), other)
    with pytest.raises(VerificationError) as err:
        verify_ias_report(report)
    assert err.value.code == "IAS_BAD_SIGNATURE"


def test_bare_body_without_headers_has_no_signature(vectors: Path) -> None:
    report = IasReport.parse((_dir(vectors, "2021-06") / "ias_response_body.exact.json").read_bytes())
    assert report.signature is None
    with pytest.raises(VerificationError) as err:
        verify_ias_report(report)
    assert err.value.code == "IAS_MISSING_SIGNATURE"


def test_headers_without_chain_are_refused(vectors: Path) -> None:
    folder = _dir(vectors, "2021-06")
    headers = json.loads((folder / "ias_response_headers.extracted.json").read_bytes())
    del headers["X-IASReport-Signing-Certificate"]
    report = IasReport.parse((folder / "ias_response_body.exact.json").read_bytes(), headers)
    with pytest.raises(VerificationError) as err:
        verify_ias_report(report)
    assert err.value.code == "IAS_MISSING_SIGNATURE"


def test_header_names_are_case_insensitive(vectors: Path) -> None:
    folder = _dir(vectors, "2021-06")
    headers = json.loads((folder / "ias_response_headers.extracted.json").read_bytes())
    lowered = {k.lower(): v for k, v in headers.items()}
    verify_ias_report(IasReport.parse((folder / "ias_response_body.exact.json").read_bytes(), lowered))


# --- synthetic PKI: chains that are not Intel's, validity at the report timestamp ------------------------------


def _name(cn: str) -> x509.Name:
    organization = x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Intel Corporation")
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), organization])


def _cert(
    subject: str,
    key: rsa.RSAPrivateKey,
    issuer: str,
    issuer_key: rsa.RSAPrivateKey,
    *,
    ca: bool,
    start: datetime.datetime = datetime.datetime(2016, 1, 1, tzinfo=UTC),
    end: datetime.datetime = datetime.datetime(2049, 1, 1, tzinfo=UTC),
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def fake_pki() -> dict[str, Any]:
    """A CA named like Intel's, a leaf valid only during 2021-01..2021-09, and their keys."""
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = "Intel SGX Attestation Report Signing CA"
    ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    leaf = _cert(
        "Intel SGX Attestation Report Signing",
        leaf_key,
        ca_name,
        ca_key,
        ca=False,
        start=datetime.datetime(2021, 1, 1, tzinfo=UTC),
        end=datetime.datetime(2021, 9, 1, tzinfo=UTC),
    )
    return {"ca": ca, "ca_key": ca_key, "leaf": leaf, "leaf_key": leaf_key}


def _signed_report(
    vectors: Path, pki: dict[str, Any], timestamp: str, chain: list[x509.Certificate] | None = None
) -> IasReport:
    body = json.loads((_dir(vectors, "2021-06") / "ias_response_body.exact.json").read_bytes())
    body["timestamp"] = timestamp
    raw = json.dumps(body, separators=(",", ":")).encode()
    signature = pki["leaf_key"].sign(raw, padding.PKCS1v15(), hashes.SHA256())
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (chain or [pki["leaf"], pki["ca"]]))
    headers = {
        "X-IASReport-Signature": base64.b64encode(signature).decode(),
        "X-IASReport-Signing-Certificate": urllib.parse.quote(pem.decode()),
    }
    return IasReport.parse(raw, headers)


def test_synthetic_report_verifies_with_its_own_ca(vectors: Path, fake_pki: dict[str, Any]) -> None:
    report = _signed_report(vectors, fake_pki, "2021-06-03T20:55:31.491437")
    verify_ias_report(report, ca=fake_pki["ca"])


def test_chain_with_a_ca_that_is_not_the_pinned_one_is_refused(vectors: Path, fake_pki: dict[str, Any]) -> None:
    report = _signed_report(vectors, fake_pki, "2021-06-03T20:55:31.491437")
    with pytest.raises(VerificationError) as err:
        verify_ias_report(report)
    assert err.value.code == "IAS_UNTRUSTED_CHAIN"


def test_leaf_not_issued_by_the_pinned_ca_is_refused(vectors: Path, fake_pki: dict[str, Any]) -> None:
    # the header's CA is Intel's real one, but the leaf was signed by an impostor
    chain = [fake_pki["leaf"], ias_report_signing_ca()]
    report = _signed_report(vectors, fake_pki, "2021-06-03T20:55:31.491437", chain)
    with pytest.raises(VerificationError) as err:
        verify_ias_report(report)
    assert err.value.code == "IAS_UNTRUSTED_CHAIN"


def test_real_leaf_and_pinned_ca_cannot_vouch_for_a_foreign_signature(vectors: Path, fake_pki: dict[str, Any]) -> None:
    real = _exact(vectors, "2021-06").signing_chain
    report = _signed_report(vectors, fake_pki, "2021-06-03T20:55:31.491437", list(real))
    with pytest.raises(VerificationError) as err:
        verify_ias_report(report)
    assert err.value.code == "IAS_BAD_SIGNATURE"


@pytest.mark.parametrize("timestamp", ["2021-10-01T00:00:00.000000", "2020-12-31T23:59:59.999999"])
def test_timestamp_outside_leaf_validity_is_refused(vectors: Path, fake_pki: dict[str, Any], timestamp: str) -> None:
    report = _signed_report(vectors, fake_pki, timestamp)
    with pytest.raises(VerificationError) as err:
        verify_ias_report(report, ca=fake_pki["ca"])
    assert err.value.code == "IAS_CERT_NOT_VALID_AT_TIMESTAMP"


# --- malformed input ---------------------------------------------------------------------------------------------


def test_python_dict_repr_is_not_json(vectors: Path) -> None:
    with pytest.raises(FormatError) as err:
        IasReport.parse((_dir(vectors, "2021-12") / "quote.json").read_bytes())
    assert "not JSON" in err.value.reason


@pytest.mark.parametrize(
    "field", ["id", "timestamp", "version", "isvEnclaveQuoteStatus", "isvEnclaveQuoteBody"]
)
def test_missing_required_field(vectors: Path, field: str) -> None:
    body = json.loads((_dir(vectors, "2021-06") / "ias_response_body.exact.json").read_bytes())
    del body[field]
    with pytest.raises(FormatError) as err:
        IasReport.parse(json.dumps(body).encode())
    assert err.value.field == field


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("version", "4"),
        ("version", True),
        ("timestamp", "yesterday"),
        ("timestamp", "0001-01-01T00:00:00+01:00"),  # before year 1 in UTC: used to escape as OverflowError
        ("timestamp", "9999-12-31T23:59:59-01:00"),
        ("isvEnclaveQuoteBody", "!!!"),
        ("isvEnclaveQuoteBody", base64.b64encode(bytes(431)).decode()),
        ("advisoryIDs", "INTEL-SA-00161"),
        ("advisoryIDs", [1, 2]),
        ("platformInfoBlob", "zz"),
        ("epidPseudonym", "@@"),
    ],
)
def test_wrongly_typed_field(vectors: Path, field: str, value: Any) -> None:
    body = json.loads((_dir(vectors, "2021-06") / "ias_response_body.exact.json").read_bytes())
    body[field] = value
    with pytest.raises(FormatError) as err:
        IasReport.parse(json.dumps(body).encode())
    assert err.value.field == field


@pytest.mark.parametrize(
    "document",
    [
        b"", b"[]", b"null", b'"x"', b'{"body": 3, "headers": {}}', b'{"body": {}, "headers": [], "x": 1}', b"\xff",
        b'{"body": "\\ud800"}', b'{"body": "{\\"id\\": 1}"}', b"[" * 100000,
    ],
)
def test_malformed_documents(document: bytes) -> None:
    with pytest.raises(FormatError):
        IasReport.parse(document)


def test_malformed_headers(vectors: Path) -> None:
    body = (_dir(vectors, "2021-06") / "ias_response_body.exact.json").read_bytes()
    for headers in (b"[]", b"not json", {"X-IASReport-Signature": "***"}, {"X-IASReport-Signing-Certificate": "junk"}):
        with pytest.raises(FormatError):
            IasReport.parse(body, headers)


# --- fuzzing: only FormatError escapes the parser ----------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=4),
    max_leaves=10,
)


@given(st.binary(max_size=300))
def test_fuzz_bytes(data: bytes) -> None:
    try:
        IasReport.parse(data)
    except FormatError:
        pass


@given(document=_json, headers=st.none() | _json)
def test_fuzz_json_documents(document: Any, headers: Any) -> None:
    try:
        IasReport.parse(json.dumps(document).encode(), json.dumps(headers).encode() if headers is not None else None)
    except FormatError:
        pass


@given(
    key=st.sampled_from(
        ["id", "timestamp", "version", "isvEnclaveQuoteStatus", "isvEnclaveQuoteBody", "advisoryIDs", "advisoryURL",
         "nonce", "epidPseudonym", "platformInfoBlob"]
    ),
    value=_json,
)
def test_fuzz_field_values(vectors: Path, key: str, value: Any) -> None:
    body = json.loads((_dir(vectors, "2021-06") / "ias_response_body.exact.json").read_bytes())
    body[key] = value
    try:
        IasReport.parse(json.dumps({"body": body, "headers": {}}).encode())
    except FormatError:
        pass
