"""Quotes of the simulated platform, verified by dcap-qvl against the simulation root, with file collateral.

Expected statuses and advisories are the configured ones (the issue's acceptance bar); refusals are dcap-qvl's.
"""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path

import dcap_qvl
import pytest
from cryptography import x509

from _sim_helpers import STATUSES, launch, qvl_collateral, quote_for, verify
from sgx_iot.errors import PlatformError
from sgx_iot.platform.sim import PlatformStore, SimPlatform, build_collateral
from sgx_iot.platform.sim.qe import DEFAULT_AUTH_DATA, QE_ISV_PROD_ID, QE_MRSIGNER
from sgx_iot.sgx.dcap_quote import INTEL_QE_VENDOR_ID, DcapQuote
from sgx_iot.sgx.report import Report, TargetInfo


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> SimPlatform:
    return SimPlatform(tmp_path_factory.mktemp("sim") / "platform")


@pytest.fixture(scope="module")
def quote(platform: SimPlatform) -> bytes:
    return quote_for(launch(platform), bytes(range(64)))


@pytest.fixture
def fresh(tmp_path: Path) -> SimPlatform:
    """A platform of its own, for tests that change its configuration."""
    return SimPlatform(tmp_path / "platform")


def test_quote_verifies_up_to_date(platform: SimPlatform, quote: bytes) -> None:
    report = verify(quote, qvl_collateral(build_collateral(platform.store)), platform.store.pki.root_der())
    assert report.status == "UpToDate"
    assert report.advisory_ids == []
    assert report.ppid == platform.store.config.pck.ppid
    enclave = json.loads(report.to_json())["report"]["SgxEnclave"]
    assert enclave["report_data"] == bytes(range(64)).hex()
    claims = json.loads(report.to_json())
    assert claims["qe_status"] == {"status": "UpToDate", "advisory_ids": []}
    assert enclave["mr_enclave"] == DcapQuote.parse(quote).report_body.mr_enclave.hex()


@pytest.mark.parametrize("status", STATUSES)
def test_configured_status_and_advisories_come_out_exactly(fresh: SimPlatform, status: str) -> None:
    advisories = ["INTEL-SA-00615", "INTEL-SA-00657", "SGX-IOT-SIM-0001"]
    fresh.store.set_tcb(status, advisories)
    quote = quote_for(launch(fresh))
    report = verify(quote, qvl_collateral(build_collateral(fresh.store)), fresh.store.pki.root_der())
    assert report.status == status
    assert report.advisory_ids == advisories


def test_tcb_status_without_advisories(fresh: SimPlatform) -> None:
    fresh.store.set_tcb("SWHardeningNeeded")
    report = verify(quote_for(launch(fresh)), qvl_collateral(build_collateral(fresh.store)), fresh.store.pki.root_der())
    assert (report.status, report.advisory_ids) == ("SWHardeningNeeded", [])


def test_revoked_tcb_is_refused(fresh: SimPlatform) -> None:
    fresh.store.set_tcb("Revoked", ["INTEL-SA-00615"])
    with pytest.raises(ValueError, match="Revoked"):
        verify(quote_for(launch(fresh)), qvl_collateral(build_collateral(fresh.store)), fresh.store.pki.root_der())


def test_revoked_pck_is_refused(fresh: SimPlatform) -> None:
    quote = quote_for(launch(fresh))
    verify(quote, qvl_collateral(build_collateral(fresh.store)), fresh.store.pki.root_der())
    fresh.store.set_pck_revoked(True)
    collateral = build_collateral(fresh.store)
    crl = x509.load_der_x509_crl(collateral.pck_crl)
    assert crl.get_revoked_certificate_by_serial_number(fresh.store.pki.pck_cert.serial_number) is not None
    with pytest.raises(ValueError, match="CertRevoked|revoked"):
        verify(quote, qvl_collateral(collateral), fresh.store.pki.root_der())
    fresh.store.set_pck_revoked(False)
    verify(quote, qvl_collateral(build_collateral(fresh.store)), fresh.store.pki.root_der())


def test_collateral_past_next_update_is_refused(platform: SimPlatform, quote: bytes) -> None:
    collateral = build_collateral(platform.store)
    next_update = json.loads(collateral.tcb_info)["nextUpdate"]
    expiry = int(datetime.datetime.strptime(next_update, "%Y-%m-%dT%H:%M:%SZ")
                 .replace(tzinfo=datetime.timezone.utc).timestamp())  # fmt: skip
    root = platform.store.pki.root_der()
    assert verify(quote, qvl_collateral(collateral), root, expiry - 1).status == "UpToDate"
    with pytest.raises(ValueError, match="expired|Expired"):
        verify(quote, qvl_collateral(collateral), root, expiry + 1)


def test_collateral_issued_in_the_past_is_stale_now(tmp_path: Path) -> None:
    now = datetime.datetime.now(datetime.timezone.utc)
    old = SimPlatform(store=PlatformStore.init(tmp_path / "old", now=now - datetime.timedelta(days=60)))
    quote = quote_for(launch(old))
    issued = now - datetime.timedelta(days=old.store.config.tcb.validity_days + 5)
    collateral = qvl_collateral(build_collateral(old.store, issued))
    root = old.store.pki.root_der()
    assert verify(quote, collateral, root, int(issued.timestamp())).status == "UpToDate"
    with pytest.raises(ValueError, match="expired|Expired"):
        verify(quote, collateral, root)


def test_debug_enclave_quote_is_refused(platform: SimPlatform) -> None:
    runtime = launch(platform, debug=True)
    assert runtime.identity.debug
    quote = quote_for(runtime)
    assert DcapQuote.parse(quote).report_body.attributes.debug
    with pytest.raises(ValueError, match="[Dd]ebug"):
        verify(quote, qvl_collateral(build_collateral(platform.store)), platform.store.pki.root_der())


def test_intel_root_refuses_simulated_quote(platform: SimPlatform, quote: bytes) -> None:
    collateral = qvl_collateral(build_collateral(platform.store))
    with pytest.raises(ValueError):
        dcap_qvl.verify(quote, collateral, int(time.time()))


def test_another_simulation_root_refuses(platform: SimPlatform, quote: bytes, fresh: SimPlatform) -> None:
    with pytest.raises(ValueError):
        verify(quote, qvl_collateral(build_collateral(platform.store)), fresh.store.pki.root_der())


@pytest.mark.parametrize("offset", [48 + 320, 48 + 320 + 63, 48 + 64, 48 + 128, 8])
def test_flipped_bit_in_signed_part_is_refused(platform: SimPlatform, quote: bytes, offset: int) -> None:
    """REPORTDATA (first and last byte), MRENCLAVE, MRSIGNER, header QE SVN."""
    tampered = bytearray(quote)
    tampered[offset] ^= 0x01
    with pytest.raises(ValueError):
        verify(bytes(tampered), qvl_collateral(build_collateral(platform.store)), platform.store.pki.root_der())


def test_quote_structure_matches_hardware_shape(platform: SimPlatform, quote: bytes) -> None:
    parsed = DcapQuote.parse(quote)
    assert parsed.to_bytes() == quote
    config = platform.store.config
    header = parsed.header
    assert (header.version, header.att_key_type, header.att_key_data_0) == (3, 2, 0)
    assert header.qe_vendor_id == INTEL_QE_VENDOR_ID
    assert (header.qe_svn, header.pce_svn) == (config.qe_svn, config.pck.pce_svn)
    assert header.user_data == config.qe_id + bytes(4)
    sig = parsed.signature_data
    assert sig.qe_auth_data == DEFAULT_AUTH_DATA
    assert sig.qe_report.mr_signer == QE_MRSIGNER and sig.qe_report.isv_prod_id == QE_ISV_PROD_ID
    assert sig.certification.cert_type == 5 and sig.certification.data.endswith(b"-----\n\0")
    chain = parsed.pck_chain()
    pki = platform.store.pki
    assert chain == [pki.pck_cert, pki.processor_cert, pki.root_cert]
    parsed.verify_isv_signature()
    parsed.verify_qe_report_binding()
    parsed.verify_qe_report_signature(chain[0].public_key())  # type: ignore[arg-type]


def test_quote_carries_the_einit_identity(platform: SimPlatform) -> None:
    runtime = launch(platform, isv_svn=3, isv_prod_id=9)
    body = DcapQuote.parse(quote_for(runtime, b"\xab" * 64)).report_body
    identity = runtime.identity
    assert body.mr_enclave == identity.mrenclave and body.mr_signer == identity.mrsigner
    assert (body.isv_prod_id, body.isv_svn) == (9, 3)
    assert body.attributes == identity.attributes and body.attributes.flags == 0x5
    assert body.cpu_svn == platform.store.config.pck.cpu_svn
    assert body.report_data == b"\xab" * 64


def test_qe_refuses_report_with_bad_mac(platform: SimPlatform) -> None:
    runtime = launch(platform)
    report = runtime.create_report(runtime.qe_target_info(), bytes(64))
    mac = bytearray(report.mac)
    mac[0] ^= 1
    with pytest.raises(PlatformError) as err:
        runtime.get_quote(Report(report.body, report.key_id, bytes(mac)))
    assert err.value.code == "QE_REPORT_MAC_MISMATCH"


def test_qe_refuses_modified_report_body(platform: SimPlatform) -> None:
    runtime = launch(platform)
    report = runtime.create_report(runtime.qe_target_info(), bytes(64))
    forged = Report.parse(report.to_bytes()[:320] + b"\x01" * 64 + report.to_bytes()[384:])
    with pytest.raises(PlatformError, match="MAC"):
        runtime.get_quote(forged)


def test_qe_refuses_report_targeted_elsewhere(platform: SimPlatform) -> None:
    runtime = launch(platform)
    report = runtime.create_report(runtime.target_info(), bytes(64))  # targeted at itself, not at the QE
    with pytest.raises(PlatformError) as err:
        runtime.get_quote(report)
    assert err.value.code == "QE_REPORT_MAC_MISMATCH"


def test_qe_refuses_report_from_another_platform(platform: SimPlatform, fresh: SimPlatform) -> None:
    foreign = launch(fresh)
    report = foreign.create_report(foreign.qe_target_info(), bytes(64))
    with pytest.raises(PlatformError) as err:
        launch(platform).get_quote(report)
    assert err.value.code == "QE_REPORT_MAC_MISMATCH"


def test_each_quote_is_freshly_signed(platform: SimPlatform) -> None:
    runtime = launch(platform)
    first, second = quote_for(runtime), quote_for(runtime)
    assert first[:432] == second[:432] and first != second  # ECDSA signatures are randomised


def test_qe_isvsvn_is_configurable(fresh: SimPlatform) -> None:
    fresh.store.set_qe_svn(11)
    platform = SimPlatform(fresh.store.folder)
    assert TargetInfo.parse(platform.quoting_enclave.target_info().to_bytes()) == platform.quoting_enclave.target_info()
    quote = quote_for(launch(platform))
    parsed = DcapQuote.parse(quote)
    assert parsed.header.qe_svn == parsed.signature_data.qe_report.isv_svn == 11
    report = verify(quote, qvl_collateral(build_collateral(platform.store)), platform.store.pki.root_der())
    assert report.status == "UpToDate"
    assert json.loads(build_collateral(platform.store).qe_identity)["tcbLevels"][0]["tcb"]["isvsvn"] == 11
