"""The simulated PCCS, served by real uvicorn on 127.0.0.1, fetched by ``dcap_qvl.get_collateral`` and httpx."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from _sim_helpers import STATUSES, fetch_collateral, launch, quote_for, verify
from sgx_iot.errors import PlatformError, UsageError
from sgx_iot.platform.sim import SimPlatform, pccs

V4 = "/sgx/certification/v4"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> SimPlatform:
    return SimPlatform(tmp_path_factory.mktemp("sim") / "platform")


@pytest.fixture(scope="module")
def url(platform: SimPlatform) -> Iterator[str]:
    with pccs.running(platform.store.folder) as base:
        yield base


@pytest.fixture(scope="module")
def quote(platform: SimPlatform) -> bytes:
    return quote_for(launch(platform))


@pytest.fixture
def tcb_reset(platform: SimPlatform) -> Iterator[None]:
    yield
    platform.store.set_tcb("UpToDate")
    platform.store.set_pck_revoked(False)


@pytest.mark.parametrize("status", STATUSES)
def test_get_collateral_gives_configured_status(
    platform: SimPlatform, url: str, quote: bytes, status: str, tcb_reset: None
) -> None:
    advisories = [] if status == "UpToDate" else ["INTEL-SA-00615", "INTEL-SA-00828"]
    platform.store.set_tcb(status, advisories)
    report = verify(quote, fetch_collateral(url, quote), platform.store.pki.root_der())
    assert report.status == status
    assert report.advisory_ids == advisories


def test_base_url_with_api_path_works_too(platform: SimPlatform, url: str, quote: bytes) -> None:
    report = verify(quote, fetch_collateral(url + V4, quote), platform.store.pki.root_der())
    assert report.status == "UpToDate"


def test_revoked_pck_from_pccs_is_refused(platform: SimPlatform, url: str, quote: bytes, tcb_reset: None) -> None:
    platform.store.set_pck_revoked(True)
    with pytest.raises(ValueError, match="Revoked|revoked"):
        verify(quote, fetch_collateral(url, quote), platform.store.pki.root_der())


def test_revoked_tcb_from_pccs_is_refused(platform: SimPlatform, url: str, quote: bytes, tcb_reset: None) -> None:
    platform.store.set_tcb("Revoked")
    with pytest.raises(ValueError, match="Revoked"):
        verify(quote, fetch_collateral(url, quote), platform.store.pki.root_der())


def test_fetched_collateral_is_the_signed_text(platform: SimPlatform, url: str, quote: bytes) -> None:
    fetched = json.loads(fetch_collateral(url, quote).to_json())
    body = httpx.get(f"{url}{V4}/qe/identity").text
    assert body.startswith('{"enclaveIdentity":{"id":"QE"')
    assert json.loads(fetched["qe_identity"])["mrsigner"] == json.loads(body)["enclaveIdentity"]["mrsigner"]
    assert fetched["tcb_info"].startswith('{"id":"SGX","version":3,')


def test_endpoints_and_headers(platform: SimPlatform, url: str) -> None:
    pki = platform.store.pki
    fmspc = platform.store.config.pck.fmspc.hex().upper()
    tcb = httpx.get(f"{url}{V4}/tcb", params={"fmspc": fmspc})
    assert tcb.status_code == 200 and tcb.headers["content-type"] == "application/json"
    assert urllib.parse.unquote(tcb.headers["TCB-Info-Issuer-Chain"]) == pki.tcb_issuer_chain_pem()
    assert "%0A" in tcb.headers["TCB-Info-Issuer-Chain"]  # URL-encoded PEM, like Intel's
    qe = httpx.get(f"{url}{V4}/qe/identity", params={"update": "early"})
    assert urllib.parse.unquote(qe.headers["SGX-Enclave-Identity-Issuer-Chain"]) == pki.tcb_issuer_chain_pem()
    der = httpx.get(f"{url}{V4}/pckcrl", params={"ca": "processor", "encoding": "der"})
    assert urllib.parse.unquote(der.headers["SGX-PCK-CRL-Issuer-Chain"]) == pki.pck_crl_issuer_chain_pem()
    assert x509.load_der_x509_crl(der.content).issuer == pki.processor_cert.subject
    pem = httpx.get(f"{url}{V4}/pckcrl", params={"ca": "processor"})
    assert x509.load_pem_x509_crl(pem.content).issuer == pki.processor_cert.subject
    root = httpx.get(f"{url}{V4}/rootcacrl")
    assert x509.load_der_x509_crl(bytes.fromhex(root.text)).issuer == pki.root_cert.subject
    about = httpx.get(url + "/").json()
    assert "SIMULATED" in about["service"] and about["fmspc"] == fmspc


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/tcb", {"fmspc": "00906ED50000"}, 404),
        ("/tcb", {"fmspc": "nothex"}, 422),
        ("/tcb", {}, 422),
        ("/pckcrl", {"ca": "platform"}, 404),
        ("/pckcrl", {"ca": "other"}, 422),
        ("/pckcrl", {"ca": "processor", "encoding": "base64"}, 422),
        ("/qe/identity", {"update": "never"}, 422),
        ("/pckcert", {}, 404),
    ],
)
def test_bad_requests(url: str, path: str, params: dict[str, str], status: int) -> None:
    assert httpx.get(f"{url}{V4}{path}", params=params).status_code == status


def test_loopback_only(platform: SimPlatform) -> None:
    for host in ("0.0.0.0", "192.168.1.1", "example.com"):
        with pytest.raises(UsageError, match="loopback"):
            pccs.check_loopback(host)
    pccs.check_loopback("::1")
    pccs.check_loopback("localhost")


def test_refuses_folder_without_platform(tmp_path: Path) -> None:
    with pytest.raises(PlatformError) as err:
        pccs.create_app(tmp_path)
    assert err.value.code == "PLATFORM_NOT_INITIALISED"


def test_port_in_use_is_a_usage_error(platform: SimPlatform, url: str) -> None:
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(UsageError, match="port"):
        with pccs.running(platform.store.folder, port=port):
            pass


def test_ipv6_loopback(platform: SimPlatform, quote: bytes) -> None:
    try:
        context = pccs.running(platform.store.folder, host="::1")
        base = context.__enter__()
    except UsageError:
        pytest.skip("no IPv6 loopback on this machine")
    try:
        assert base.startswith("http://[::1]:")
        assert httpx.get(base + "/").status_code == 200
    finally:
        context.__exit__(None, None, None)
