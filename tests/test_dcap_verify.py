"""DCAP quote verification through dcap-qvl, against the real dcap-qvl sample quote and its collateral."""

from __future__ import annotations

import datetime
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_iot.errors import FormatError, UsageError, VerificationError
from sgx_iot.verify.dcap import (
    INTEL_ROOT,
    _map_error,
    fetch_collateral,
    load_collateral,
    load_root_ca,
    verify_dcap_quote,
)

pytestmark = pytest.mark.vectors

# vectors/README.md, dcap/dcap-qvl-sample
NOW = 1752919277
WINDOW = (1750330571, 1752919278)
MRENCLAVE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
MRSIGNER = "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"
INTEL_ROOT_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
REPORT_DATA_OFFSET = 48 + 320
MRENCLAVE_OFFSET = 48 + 64


@pytest.fixture(scope="module")
def sample(vectors: Path) -> tuple[bytes, bytes]:
    folder = vectors / "dcap/dcap-qvl-sample"
    return (folder / "sgx_quote").read_bytes(), (folder / "sgx_quote_collateral.json").read_bytes()


def _flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


def test_sample_verifies_to_the_readme_values(sample: tuple[bytes, bytes]) -> None:
    quote, collateral = sample
    result = verify_dcap_quote(quote, load_collateral(collateral), now=NOW)
    assert result.status == "ConfigurationAndSWHardeningNeeded"
    assert result.advisory_ids == ("INTEL-SA-00289", "INTEL-SA-00615")
    assert result.qe_status == "UpToDate"
    assert result.ppid.hex() == "d04ec06d4e6d92dc90d0ad3cf5ee2ddf"
    assert result.root == INTEL_ROOT
    header = result.header
    assert (header.version, header.att_key_type, header.att_key_data_0) == (3, 2, 0)
    assert (header.qe_svn, header.pce_svn) == (10, 15)
    assert header.qe_vendor_id.hex() == "939a7233f79c4ca9940a0db3957f0607"
    body = result.report_body
    assert body.mr_enclave.hex() == MRENCLAVE
    assert body.mr_signer.hex() == MRSIGNER
    assert (body.isv_prod_id, body.isv_svn) == (0, 0)
    assert (body.attributes.flags, body.attributes.xfrm) == (0x5, 0xE7)
    assert not body.attributes.debug
    assert body.report_data == b"Hello, world!" + bytes(51)


def test_collateral_may_be_text_bytes_or_dict(sample: tuple[bytes, bytes]) -> None:
    quote, collateral = sample
    for form in (collateral, collateral.decode(), json.loads(collateral)):
        assert verify_dcap_quote(quote, form, now=NOW).status == "ConfigurationAndSWHardeningNeeded"


def test_to_dict_is_json_with_hex(sample: tuple[bytes, bytes]) -> None:
    quote, collateral = sample
    summary = json.loads(json.dumps(verify_dcap_quote(quote, collateral, now=NOW).to_dict()))
    assert summary["enclave"]["mr_enclave"] == MRENCLAVE
    assert summary["ppid"] == "d04ec06d4e6d92dc90d0ad3cf5ee2ddf"


@pytest.mark.parametrize("now", [WINDOW[0], WINDOW[1]])
def test_window_edges_verify(sample: tuple[bytes, bytes], now: int) -> None:
    quote, collateral = sample
    assert verify_dcap_quote(quote, collateral, now=now).status == "ConfigurationAndSWHardeningNeeded"


def test_after_the_window_is_refused_as_expired(sample: tuple[bytes, bytes]) -> None:
    quote, collateral = sample
    with pytest.raises(VerificationError) as err:
        verify_dcap_quote(quote, collateral, now=WINDOW[1] + 1)
    assert err.value.code == "COLLATERAL_EXPIRED"
    assert "expired" in err.value.message


def test_before_the_window_is_refused_as_not_yet_valid(sample: tuple[bytes, bytes]) -> None:
    quote, collateral = sample
    with pytest.raises(VerificationError) as err:
        verify_dcap_quote(quote, collateral, now=WINDOW[0] - 1)
    assert err.value.code == "COLLATERAL_NOT_YET_VALID"
    assert "TCBInfo issue date is in the future" in err.value.message


@pytest.mark.parametrize("field_offset", [REPORT_DATA_OFFSET, MRENCLAVE_OFFSET], ids=["reportdata", "mrenclave"])
@given(index=st.integers(0, 31), bit=st.integers(0, 7))
@settings(max_examples=12, deadline=None)
def test_any_flipped_bit_of_reportdata_or_mrenclave_is_refused(
    sample: tuple[bytes, bytes], field_offset: int, index: int, bit: int
) -> None:
    quote, collateral = sample
    with pytest.raises(VerificationError) as err:
        verify_dcap_quote(_flip(quote, field_offset + index, bit), collateral, now=NOW)
    assert err.value.code == "QUOTE_BAD_SIGNATURE"


def test_last_reportdata_byte_flipped_is_refused(sample: tuple[bytes, bytes]) -> None:
    quote, collateral = sample
    with pytest.raises(VerificationError) as err:
        verify_dcap_quote(_flip(quote, REPORT_DATA_OFFSET + 63, 7), collateral, now=NOW)
    assert err.value.code == "QUOTE_BAD_SIGNATURE"


def test_explicit_intel_root_verifies(sample: tuple[bytes, bytes], vectors: Path) -> None:
    quote, collateral = sample
    root = load_root_ca((vectors / "roots/Intel_SGX_Root_CA.pem").read_bytes())
    assert root == (vectors / "roots/Intel_SGX_Root_CA.der").read_bytes()
    result = verify_dcap_quote(quote, collateral, root_ca_der=root, now=NOW)
    assert result.root == "sha256:" + INTEL_ROOT_SHA256
    assert result.status == "ConfigurationAndSWHardeningNeeded"


def _self_signed_root(common_name: str = "Intel SGX Root CA") -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime.datetime(2018, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(datetime.datetime(2049, 1, 1, tzinfo=datetime.UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def test_wrong_root_is_untrusted(sample: tuple[bytes, bytes]) -> None:
    quote, collateral = sample
    with pytest.raises(VerificationError) as err:
        verify_dcap_quote(quote, collateral, root_ca_der=_self_signed_root(), now=NOW)
    assert err.value.code == "UNTRUSTED_ROOT"


def test_tampered_pck_chain_is_refused(sample: tuple[bytes, bytes]) -> None:
    quote, collateral = sample
    with pytest.raises(VerificationError) as err:
        verify_dcap_quote(_flip(quote, 2000), collateral, now=NOW)
    assert err.value.code == "CERTIFICATE_CHAIN_INVALID"


def test_tampered_tcb_info_is_refused(sample: tuple[bytes, bytes]) -> None:
    quote, collateral = sample
    document = json.loads(collateral)
    document["tcb_info"] = document["tcb_info"].replace('"version":', '"version" :', 1)
    assert document["tcb_info"] != json.loads(collateral)["tcb_info"]
    with pytest.raises(VerificationError) as err:
        verify_dcap_quote(quote, document, now=NOW)
    assert err.value.code == "COLLATERAL_BAD_SIGNATURE"


@pytest.mark.parametrize("cut", [0, 10, 47, 100, 432, 1000, 4599])
def test_truncated_quote_is_a_format_error(sample: tuple[bytes, bytes], cut: int) -> None:
    quote, collateral = sample
    with pytest.raises(FormatError):
        verify_dcap_quote(quote[:cut], collateral, now=NOW)


def test_negative_now_is_a_usage_error(sample: tuple[bytes, bytes]) -> None:
    quote, collateral = sample
    with pytest.raises(UsageError):
        verify_dcap_quote(quote, collateral, now=-1)


def test_now_beyond_u64_is_a_usage_error(sample: tuple[bytes, bytes]) -> None:
    """dcap-qvl takes a u64: a larger time used to escape as OverflowError (a traceback from the CLI)."""
    quote, collateral = sample
    with pytest.raises(UsageError, match="2\\*\\*64"):
        verify_dcap_quote(quote, collateral, now=1 << 64)


@pytest.mark.parametrize(
    "text", [b"", b"not json", b"{}", b"[]", b'{"pck_crl_issuer_chain": 1}', b"\xff\xfe", b"null"]
)
def test_bad_collateral_is_a_format_error(text: bytes) -> None:
    with pytest.raises(FormatError) as err:
        load_collateral(text)
    assert err.value.structure == "QuoteCollateralV3"


def test_collateral_with_bad_tcb_info_json_is_a_format_error(sample: tuple[bytes, bytes]) -> None:
    quote, collateral = sample
    document = json.loads(collateral)
    document["tcb_info"] = "not json"
    with pytest.raises(FormatError) as err:
        verify_dcap_quote(quote, document, now=NOW)
    assert err.value.structure == "QuoteCollateralV3"


@pytest.mark.parametrize("data", [b"", b"garbage", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"])
def test_bad_root_is_a_format_error(data: bytes) -> None:
    with pytest.raises(FormatError):
        load_root_ca(data)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        # messages as dcap-qvl 0.7.0 words them (strings of its extension module)
        ("Verification failed: Debug mode is enabled", "DEBUG_ENCLAVE"),
        ("Verification failed: TCB status is invalid: Revoked", "TCB_REVOKED"),
        (
            "Verification failed: Failed to verify certificate chain\n\nCaused by:\n    CertRevoked",
            "CERTIFICATE_REVOKED",
        ),
        ("Verification failed: Failed to verify certificate chain\n\nCaused by:\n    UnknownIssuer", "UNTRUSTED_ROOT"),
        ("Verification failed: TCBInfo expired", "COLLATERAL_EXPIRED"),
        ("Verification failed: QE report hash mismatch", "QE_REPORT_DATA_MISMATCH"),
        ("Verification failed: Fmspc mismatch", "COLLATERAL_MISMATCH"),
        ("Verification failed: Signature is invalid for qe_identity in quote_collateral", "COLLATERAL_BAD_SIGNATURE"),
        ("Verification failed: QE MRSIGNER mismatch: expected 8c4f, got 00", "QE_IDENTITY_MISMATCH"),
        ("Verification failed: No matching TCB level found", "TCB_LEVEL_NOT_FOUND"),
        ("Verification failed: something new", "QUOTE_INVALID"),
    ],
)
def test_dcap_qvl_messages_map_to_codes(message: str, code: str) -> None:
    error = _map_error(message)
    assert isinstance(error, VerificationError)
    assert error.code == code
    assert message.split("\n")[0].removeprefix("Verification failed: ") in error.message


@pytest.fixture(scope="module")
def parsed_collateral(sample: tuple[bytes, bytes]) -> object:
    return load_collateral(sample[1])


@given(data=st.binary(max_size=600))
@settings(max_examples=60, deadline=None)
def test_fuzz_quote_bytes_raise_only_project_errors(parsed_collateral: object, data: bytes) -> None:
    try:
        verify_dcap_quote(data, parsed_collateral, now=NOW)  # type: ignore[arg-type]
    except (FormatError, VerificationError):
        pass


@given(index=st.integers(0, 4599), value=st.integers(0, 255))
@settings(max_examples=40, deadline=None)
def test_fuzz_one_byte_changed_raises_only_project_errors(
    sample: tuple[bytes, bytes], parsed_collateral: object, index: int, value: int
) -> None:
    quote = bytearray(sample[0])
    quote[index] = value
    try:
        verify_dcap_quote(bytes(quote), parsed_collateral, now=NOW)  # type: ignore[arg-type]
    except (FormatError, VerificationError):
        pass


# --- fetching collateral from a PCCS ---------------------------------------------------------------------------


@pytest.fixture()
def pccs_404() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server that answers 404 to everything and records the paths asked."""
    paths: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            paths.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", paths
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_collateral_asks_the_pccs_v4_api_and_reports_refusal(
    sample: tuple[bytes, bytes], pccs_404: tuple[str, list[str]]
) -> None:
    url, paths = pccs_404
    with pytest.raises(VerificationError) as err:
        fetch_collateral(url, sample[0], timeout=20)
    assert err.value.code == "COLLATERAL_UNAVAILABLE"
    assert "404" in err.value.message
    assert paths and paths[0].startswith("/sgx/certification/v4/")


def test_fetch_collateral_refuses_a_malformed_quote() -> None:
    with pytest.raises(FormatError):
        fetch_collateral("http://127.0.0.1:9", b"\x03\x00")


def test_expired_collateral_message_has_dates_and_advice(vectors: Path) -> None:
    folder = vectors / "dcap" / "dcap-qvl-sample"
    quote = (folder / "sgx_quote").read_bytes()
    collateral = load_collateral((folder / "sgx_quote_collateral.json").read_bytes())
    with pytest.raises(VerificationError) as err:
        verify_dcap_quote(quote, collateral, now=1752919277 + 86400 * 365)
    assert err.value.code == "COLLATERAL_EXPIRED"
    assert "UnixTime(" not in err.value.message and " UTC" in err.value.message
    assert "--now" in err.value.message
