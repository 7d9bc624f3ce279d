"""The simulated PKI and collateral documents, compared with Intel's real ones (vectors) and read by dcap-qvl."""

from __future__ import annotations

import datetime
import json
from dataclasses import replace
from pathlib import Path

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from _sim_helpers import launch, quote_for
from sgx_iot.platform.sim import SimPlatform, build_collateral
from sgx_iot.platform.sim import _der
from sgx_iot.platform.sim.collateral import Validity, qe_identity, tcb_info
from sgx_iot.platform.sim.pki import SGX_EXTENSION_OID, PckInfo, Pki, create_pki, issue_pck, sgx_extension_value
from sgx_iot.platform.sim.qe import QE_MRSIGNER
from sgx_iot.sgx.dcap_quote import DcapQuote
from sgx_iot.sgx.ecdsa import raw_to_der

NOW = datetime.datetime(2025, 6, 1, tzinfo=datetime.timezone.utc)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> SimPlatform:
    return SimPlatform(tmp_path_factory.mktemp("sim") / "platform")


def _extension_value(cert: x509.Certificate) -> bytes:
    ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID))
    return ext.value.value  # type: ignore[attr-defined,no-any-return]


# --- the SGX extension, byte for byte like Intel's -------------------------------------------------------


@pytest.mark.vectors
def test_sgx_extension_is_byte_identical_to_intels(vectors: Path) -> None:
    """Encoding the README's values of the dcap-qvl sample PCK certificate gives that certificate's extension."""
    quote = DcapQuote.parse((vectors / "dcap/dcap-qvl-sample/sgx_quote").read_bytes())
    real = _extension_value(quote.pck_chain()[0])
    info = PckInfo(
        ppid=bytes.fromhex("d04ec06d4e6d92dc90d0ad3cf5ee2ddf"),
        cpu_svn=bytes.fromhex("0b0b0202ff0100000000000000000000"),
        pce_svn=13,
        pce_id=bytes.fromhex("0000"),
        fmspc=bytes.fromhex("00a067110000"),
        sgx_type=0,
    )
    assert sgx_extension_value(info) == real


def test_der_primitives() -> None:
    assert _der.integer(0) == bytes.fromhex("020100")
    assert _der.integer(127) == bytes.fromhex("02017f")
    assert _der.integer(255) == bytes.fromhex("020200ff")  # as in Intel's PCK certificates
    assert _der.integer(256) == bytes.fromhex("02020100")
    assert _der.enumerated(0) == bytes.fromhex("0a0100")
    # 9 content bytes, as `openssl asn1parse` shows the extension OID in the dcap-qvl sample PCK certificate
    assert _der.oid("1.2.840.113741.1.13.1") == bytes.fromhex("06092a864886f84d010d01")
    assert _der.octet_string(b"x" * 200)[:3] == bytes.fromhex("0481c8")


@settings(max_examples=15, deadline=None)
@given(
    ppid=st.binary(min_size=16, max_size=16),
    cpu_svn=st.binary(min_size=16, max_size=16),
    pce_svn=st.integers(0, 0x7FFF),
    fmspc=st.binary(min_size=6, max_size=6),
)
def test_dcap_qvl_reads_back_the_extension(ppid: bytes, cpu_svn: bytes, pce_svn: int, fmspc: bytes) -> None:
    info = PckInfo(ppid=ppid, cpu_svn=cpu_svn, pce_svn=pce_svn, pce_id=b"\x00\x00", fmspc=fmspc)
    pki = _pki_for(info)
    ext = dcap_qvl.parse_pck_extension_from_pem(pki.pck_chain_pem().encode())
    assert (ext.ppid, ext.cpu_svn, ext.pce_svn, ext.pce_id, ext.fmspc, ext.sgx_type) == (
        ppid, cpu_svn, pce_svn, b"\x00\x00", fmspc, 0
    )  # fmt: skip


_BASE_PKI: list[Pki] = []


def _pki_for(info: PckInfo) -> Pki:
    """A PKI whose PCK certificate states ``info`` (the CA keys are made once: key generation is the slow part)."""
    if not _BASE_PKI:
        _BASE_PKI.append(create_pki(info, NOW))
    base = _BASE_PKI[0]
    return replace(base, pck_cert=issue_pck(info, base.pck_key, base.processor_cert, base.processor_key, NOW))


# --- certificate shapes ----------------------------------------------------------------------------------


def test_chain_shape_mirrors_intels(platform: SimPlatform) -> None:
    pki = platform.store.pki
    for cert, ca, path_length in (
        (pki.root_cert, True, 1),
        (pki.processor_cert, True, 0),
        (pki.pck_cert, False, None),
        (pki.tcb_signing_cert, False, None),
    ):
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        assert constraints.critical and constraints.value.ca is ca and constraints.value.path_length == path_length
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
        assert usage.critical and usage.value.key_cert_sign is ca and usage.value.digital_signature is not ca
        with pytest.raises(x509.ExtensionNotFound):
            cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        assert "SIMULATED" in cert.subject.rfc4514_string() and "not Intel" in cert.subject.rfc4514_string()
    assert pki.processor_cert.issuer == pki.root_cert.subject == pki.tcb_signing_cert.issuer
    assert pki.pck_cert.issuer == pki.processor_cert.subject
    assert "Processor" in pki.processor_cert.subject.rfc4514_string()
    pki.pck_cert.verify_directly_issued_by(pki.processor_cert)
    pki.processor_cert.verify_directly_issued_by(pki.root_cert)
    pki.tcb_signing_cert.verify_directly_issued_by(pki.root_cert)
    pki.root_cert.verify_directly_issued_by(pki.root_cert)
    assert _extension_value(pki.pck_cert) == sgx_extension_value(platform.store.config.pck)


def test_crls_are_signed_by_their_issuers(platform: SimPlatform) -> None:
    collateral = build_collateral(platform.store)
    pki = platform.store.pki
    root_crl = x509.load_der_x509_crl(collateral.root_ca_crl)
    pck_crl = x509.load_der_x509_crl(collateral.pck_crl)
    assert root_crl.is_signature_valid(pki.root_cert.public_key())  # type: ignore[arg-type]
    assert pck_crl.is_signature_valid(pki.processor_cert.public_key())  # type: ignore[arg-type]
    assert root_crl.issuer == pki.root_cert.subject and pck_crl.issuer == pki.processor_cert.subject
    assert len(list(root_crl)) == 0 and len(list(pck_crl)) == 0
    assert pck_crl.next_update_utc is not None
    assert pck_crl.next_update_utc > datetime.datetime.now(datetime.timezone.utc)


# --- TCB info and QE identity ----------------------------------------------------------------------------


def test_tcb_info_document(platform: SimPlatform) -> None:
    store = platform.store
    validity = Validity.starting(store, NOW)
    doc = tcb_info(store, validity)
    info = json.loads(doc.text)
    assert doc.text == json.dumps(info, separators=(",", ":"))  # compact, as signed
    assert list(info) == ["id", "version", "issueDate", "nextUpdate", "fmspc", "pceId", "tcbType",
                          "tcbEvaluationDataNumber", "tcbLevels"]  # fmt: skip
    assert (info["id"], info["version"], info["fmspc"]) == ("SGX", 3, store.config.pck.fmspc.hex().upper())
    assert info["issueDate"] == "2025-05-31T23:59:00Z"
    assert info["nextUpdate"] == "2025-06-30T23:59:00Z"
    for level in info["tcbLevels"]:
        assert len(level["tcb"]["sgxtcbcomponents"]) == 16
    signer = store.pki.tcb_signing_cert.public_key()
    assert isinstance(signer, ec.EllipticCurvePublicKey)
    signer.verify(raw_to_der(doc.signature), doc.text.encode(), ec.ECDSA(hashes.SHA256()))


def test_tcb_levels_follow_configuration(tmp_path: Path) -> None:
    platform = SimPlatform(tmp_path / "p")
    store = platform.store
    pce_svn = store.config.pck.pce_svn
    levels = json.loads(tcb_info(store, Validity.starting(store)).text)["tcbLevels"]
    assert [(lv["tcb"]["pcesvn"], lv["tcbStatus"]) for lv in levels] == [(pce_svn, "UpToDate"),
                                                                        (pce_svn - 1, "OutOfDate")]  # fmt: skip
    store.set_tcb("SWHardeningNeeded", ["INTEL-SA-00615"])
    levels = json.loads(tcb_info(store, Validity.starting(store)).text)["tcbLevels"]
    assert [(lv["tcb"]["pcesvn"], lv["tcbStatus"]) for lv in levels] == [
        (pce_svn + 1, "UpToDate"), (pce_svn, "SWHardeningNeeded"), (pce_svn - 1, "OutOfDate"),
    ]  # fmt: skip
    assert "advisoryIDs" not in levels[0] and levels[1]["advisoryIDs"] == ["INTEL-SA-00615"]


def test_qe_identity_matches_the_quoting_enclave(platform: SimPlatform) -> None:
    store = platform.store
    identity = json.loads(qe_identity(store, Validity.starting(store)).text)
    assert (identity["id"], identity["version"], identity["isvprodid"]) == ("QE", 2, 1)
    assert identity["mrsigner"] == QE_MRSIGNER.hex().upper()
    assert identity["attributes"] == "11000000000000000000000000000000"  # as Intel's QE identity
    assert identity["attributesMask"] == "FBFFFFFFFFFFFFFF0000000000000000"
    qe_report = DcapQuote.parse(quote_for(launch(platform))).signature_data.qe_report
    assert qe_report.mr_signer.hex().upper() == identity["mrsigner"]
    assert qe_report.isv_svn >= min(level["tcb"]["isvsvn"] for level in identity["tcbLevels"])


def test_collateral_json_round_trips_through_dcap_qvl(platform: SimPlatform) -> None:
    collateral = build_collateral(platform.store)
    ours = json.loads(collateral.to_json())
    theirs = json.loads(dcap_qvl.QuoteCollateralV3.from_json(collateral.to_json()).to_json())
    assert ours == theirs
    assert ours["tcb_info"] == collateral.tcb_info and ours["pck_crl"] == collateral.pck_crl.hex()


@pytest.mark.vectors
def test_collateral_json_has_the_fields_of_the_real_sample(platform: SimPlatform, vectors: Path) -> None:
    real = json.loads((vectors / "dcap/dcap-qvl-sample/sgx_quote_collateral.json").read_text())
    ours = json.loads(build_collateral(platform.store).to_json())
    assert set(ours) == set(real)
    assert set(json.loads(ours["tcb_info"])) <= set(json.loads(real["tcb_info"]))
    assert set(json.loads(ours["qe_identity"])) == set(json.loads(real["qe_identity"]))
