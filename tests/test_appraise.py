"""Appraisal of real evidence: simulated-platform quotes (verified by dcap-qvl under the sim root) and the real
dcap-qvl sample quote under Intel's root. Every refusal is checked for its code."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from _cloud_helpers import ISV_PROD_ID, ISV_SVN, SimWorld, enclave, make_world, pem
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgx_iot.errors import VerificationError
from sgx_iot.platform.sim import SimPlatform
from sgx_iot.verify.appraise import SKIPPED, AppraisalResult, appraise, expect_nonce
from sgx_iot.verify.collateral import FileCollateral, PccsCollateral, next_update, validity_windows
from sgx_iot.verify.dcap import load_collateral
from sgx_iot.verify.evidence import Evidence
from sgx_iot.verify.policy import Policy, TrustRoot

NONCE = bytes(range(32))
CHECKS = ["quote_format", "trust_root", "collateral", "debug", "quote", "tcb_status", "advisories", "mrenclave",
          "isv_svn", "key_binding", "nonce"]


@pytest.fixture
def world(tmp_path: Path) -> SimWorld:
    return make_world(tmp_path / "platform")


def now() -> int:
    return int(datetime.now(timezone.utc).timestamp())


def refused(result: AppraisalResult, code: str) -> None:
    assert not result.affirming
    assert result.code == code, result.to_dict()
    with pytest.raises(VerificationError) as info:
        result.raise_for_status()
    assert info.value.code == code


# --- simulated platform -----------------------------------------------------------------------------------------

def test_sim_evidence_is_affirming(world: SimWorld) -> None:
    result = appraise(world.evidence(NONCE), world.policy(), now=now(), nonce_check=expect_nonce(NONCE))
    assert result.affirming, result.to_dict()
    assert [c.name for c in result.checks] == CHECKS
    assert all(c.ok and c.code is None for c in result.checks)
    e = result.enclave
    assert e is not None
    ident = world.runtime.identity
    assert (e.mrenclave, e.mrsigner, e.isv_prod_id, e.isv_svn, e.debug) == (
        ident.mrenclave, ident.mrsigner, ISV_PROD_ID, ISV_SVN, False)
    assert result.tcb_status == "UpToDate" and result.advisory_ids == ()
    assert result.policy_id == world.policy().id
    assert result.root == "sha256:" + TrustRoot.from_der(world.root_der).sha256
    assert result.to_dict()["affirming"] is True
    assert result.platform == "simulated"
    assert result.platform_id == world.platform.store.config.pck.ppid.hex()
    result.raise_for_status()
    claimed = appraise(dataclasses.replace(world.evidence(NONCE), platform="gramine"), world.policy(), now=now())
    assert claimed.affirming and claimed.platform == "simulated"  # from the root, not the claim


def test_datetime_now_is_accepted(world: SimWorld) -> None:
    assert appraise(world.evidence(NONCE), world.policy(), now=datetime.now(timezone.utc)).affirming
    assert appraise(world.evidence(NONCE), world.policy(), now=datetime.now()).affirming


def test_identity_comes_from_the_quote_not_the_evidence_claims(world: SimWorld) -> None:
    ev = world.evidence(NONCE)
    lying = dataclasses.replace(ev, enclave={**ev.enclave, "mrenclave": "00" * 32, "debug": False})
    other = world.policy(mrenclaves=frozenset({bytes(32)}))
    refused(appraise(lying, other, now=now()), "MRENCLAVE_NOT_ALLOWED")
    assert appraise(lying, world.policy(), now=now()).affirming


def test_untrusted_root_unless_listed(world: SimWorld) -> None:
    intel_only = Policy(mrenclaves=frozenset({world.mrenclave}))
    result = appraise(world.evidence(NONCE), intel_only, now=now())
    refused(result, "UNTRUSTED_ROOT")
    assert "simulated" in result.sentence
    assert [c.code for c in result.checks[2:]] == [SKIPPED] * (len(CHECKS) - 2)
    assert result.enclave is None


def test_root_pinned_by_fingerprint(world: SimWorld) -> None:
    fingerprint = TrustRoot.from_der(world.root_der).sha256
    policy = Policy(mrenclaves=frozenset({world.mrenclave}), trust_intel=False, roots=(TrustRoot(fingerprint),))
    assert appraise(world.evidence(NONCE), policy, now=now()).affirming


def test_another_platforms_quote_is_untrusted(world: SimWorld, tmp_path: Path) -> None:
    other = SimPlatform(tmp_path / "other")
    image, sigstruct = enclave()
    ev = world.evidence(NONCE, runtime=other.launch(image, sigstruct))
    refused(appraise(ev, world.policy(), now=now()), "UNTRUSTED_ROOT")


def test_collateral_missing_expired_and_not_yet_valid(world: SimWorld) -> None:
    ev = world.evidence(NONCE, with_collateral=False)
    refused(appraise(ev, world.policy(), now=now()), "COLLATERAL_MISSING")
    full = world.evidence(NONCE)
    coll = load_collateral(full.collateral)  # type: ignore[arg-type]
    windows = validity_windows(coll)
    last = next_update(coll)
    assert appraise(full, world.policy(), now=last).affirming
    result = appraise(full, world.policy(), now=last + 1)
    refused(result, "COLLATERAL_EXPIRED")
    assert "expired" in result.sentence
    refused(appraise(full, world.policy(), now=max(w.issued for w in windows) - 1), "COLLATERAL_NOT_YET_VALID")


def test_collateral_given_beats_evidence_collateral(world: SimWorld, tmp_path: Path) -> None:
    ev = world.evidence(NONCE, with_collateral=False)
    path = tmp_path / "collateral.json"
    path.write_text(json.dumps(world.collateral()))
    assert appraise(ev, world.policy(), now=now(), collateral=FileCollateral(path)).affirming
    assert appraise(ev, world.policy(), now=now(), collateral=load_collateral(world.collateral())).affirming


@pytest.mark.parametrize(
    ("status", "accepted", "code"),
    [
        ("UpToDate", None, None),
        ("SWHardeningNeeded", None, None),
        ("ConfigurationNeeded", None, "TCB_STATUS_NOT_ACCEPTED"),
        ("ConfigurationAndSWHardeningNeeded", None, "TCB_STATUS_NOT_ACCEPTED"),
        ("ConfigurationAndSWHardeningNeeded", {"UpToDate", "ConfigurationAndSWHardeningNeeded"}, None),
        ("OutOfDate", None, "TCB_STATUS_NOT_ACCEPTED"),
        ("OutOfDate", {"OutOfDate"}, None),
        ("UpToDate", {"SWHardeningNeeded"}, "TCB_STATUS_NOT_ACCEPTED"),
    ],
)
def test_tcb_status_policy(world: SimWorld, status: str, accepted: set[str] | None, code: str | None) -> None:
    world.platform.store.set_tcb(status)
    policy = world.policy(**({"accepted_tcb_statuses": frozenset(accepted)} if accepted else {}))
    result = appraise(world.evidence(NONCE), policy, now=now())
    assert result.tcb_status == status
    if code is None:
        assert result.affirming, result.to_dict()
    else:
        refused(result, code)
        assert status in result.sentence


def test_revoked_platform_never_passes(world: SimWorld) -> None:
    world.platform.store.set_tcb("Revoked")
    result = appraise(world.evidence(NONCE), world.policy(), now=now())
    assert not result.affirming
    assert next(c for c in result.checks if c.name == "quote").code == result.code
    assert "REVOKED" in (result.code or "")


def test_revoked_pck_certificate(world: SimWorld) -> None:
    world.platform.store.set_pck_revoked(True)
    result = appraise(world.evidence(NONCE), world.policy(), now=now())
    assert not result.affirming
    assert result.failures[0].name == "quote" and "REVOKED" in (result.code or "")


def test_rejected_advisory(world: SimWorld) -> None:
    world.platform.store.set_tcb("SWHardeningNeeded", ["INTEL-SA-00615", "INTEL-SA-00289"])
    ev = world.evidence(NONCE)
    assert appraise(ev, world.policy(), now=now()).affirming
    result = appraise(ev, world.policy(rejected_advisories=frozenset({"INTEL-SA-00615"})), now=now())
    refused(result, "ADVISORY_REJECTED")
    assert "INTEL-SA-00615" in result.sentence and sorted(result.advisory_ids) == ["INTEL-SA-00289", "INTEL-SA-00615"]


def test_debug_enclave_refused(world: SimWorld) -> None:
    image, sigstruct = enclave()
    debug_rt = world.platform.launch(image, sigstruct, debug=True)
    result = appraise(world.evidence(NONCE, runtime=debug_rt), world.policy(), now=now())
    refused(result, "DEBUG_ENCLAVE")
    assert "debug" in result.sentence


def test_debug_enclave_allowed_by_policy_still_fails_closed_in_dcap_qvl(world: SimWorld) -> None:
    # dcap-qvl refuses debug enclaves whatever the caller wants (SGX_FORMATS §8.2): the policy's allow_debug
    # lets the debug check pass, but the quote check then refuses with DEBUG_ENCLAVE; never affirming.
    image, sigstruct = enclave()
    debug_rt = world.platform.launch(image, sigstruct, debug=True)
    result = appraise(world.evidence(NONCE, runtime=debug_rt), world.policy(allow_debug=True), now=now())
    assert next(c for c in result.checks if c.name == "debug").ok
    refused(result, "DEBUG_ENCLAVE")


def test_reference_values(world: SimWorld) -> None:
    ev = world.evidence(NONCE)
    refused(appraise(ev, world.policy(mrenclaves=frozenset({bytes(32)})), now=now()), "MRENCLAVE_NOT_ALLOWED")
    by_signer = dict(mrenclaves=frozenset(), mrsigners=frozenset({world.mrsigner}), isv_prod_id=ISV_PROD_ID)
    result = appraise(ev, world.policy(**by_signer), now=now())
    assert result.affirming and {"mrsigner", "isv_prod_id", "isv_svn"} <= {c.name for c in result.checks}
    assert "mrenclave" not in {c.name for c in result.checks}
    refused(appraise(ev, world.policy(**{**by_signer, "mrsigners": frozenset({bytes(32)})}), now=now()),
            "MRSIGNER_NOT_ALLOWED")
    refused(appraise(ev, world.policy(**{**by_signer, "isv_prod_id": ISV_PROD_ID + 1}), now=now()),
            "ISVPRODID_NOT_ALLOWED")
    refused(appraise(ev, world.policy(**{**by_signer, "min_isv_svn": ISV_SVN + 1}), now=now()), "ISVSVN_TOO_LOW")
    assert appraise(ev, world.policy(**{**by_signer, "min_isv_svn": ISV_SVN}), now=now()).affirming


def test_enclave_from_modified_source_is_not_allowed(world: SimWorld) -> None:
    image, sigstruct = enclave(b"sgx-iot test enclave, modified")
    rt = world.platform.launch(image, sigstruct)
    refused(appraise(world.evidence(NONCE, runtime=rt), world.policy(), now=now()), "MRENCLAVE_NOT_ALLOWED")


def test_all_failures_listed_after_a_verified_quote(world: SimWorld) -> None:
    ev = world.evidence(NONCE, claimed_key=world.key("other").public_key())
    policy = world.policy(mrenclaves=frozenset({bytes(32)}), min_isv_svn=99)
    result = appraise(ev, policy, now=now(), nonce_check=expect_nonce(b"another nonce 16"))
    assert [c.code for c in result.failures] == ["MRENCLAVE_NOT_ALLOWED", "ISVSVN_TOO_LOW", "KEY_BINDING_MISMATCH",
                                                 "NONCE_MISMATCH"]


def test_swapped_public_key_is_binding_mismatch(world: SimWorld) -> None:
    ev = world.evidence(NONCE, claimed_key=world.key("attacker").public_key())
    result = appraise(ev, world.policy(), now=now())
    refused(result, "KEY_BINDING_MISMATCH")
    assert [c.name for c in result.failures] == ["key_binding"]


def test_public_key_of_another_curve(world: SimWorld) -> None:
    ev = world.evidence(NONCE)
    p384 = dataclasses.replace(ev, public_key_pem=pem(ec.generate_private_key(ec.SECP384R1()).public_key()))
    refused(appraise(p384, world.policy(), now=now()), "PUBLIC_KEY_INVALID")


def test_nonce_checks(world: SimWorld) -> None:
    ev = world.evidence(NONCE)
    refused(appraise(ev, world.policy(), now=now(), nonce_check=expect_nonce(bytes(32))), "NONCE_MISMATCH")

    def expired(nonce: bytes) -> None:
        raise VerificationError("NONCE_EXPIRED", "too late")

    refused(appraise(ev, world.policy(), now=now(), nonce_check=expired), "NONCE_EXPIRED")
    # Evidence made for one nonce and relabelled with another: the binding no longer holds.
    relabelled = dataclasses.replace(ev, nonce=bytes(32))
    refused(appraise(relabelled, world.policy(), now=now(), nonce_check=expect_nonce(bytes(32))),
            "KEY_BINDING_MISMATCH")
    unchecked = appraise(ev, world.policy(), now=now())
    assert "not checked" in unchecked.checks[-1].sentence


def test_malformed_quotes(world: SimWorld) -> None:
    ev = world.evidence(NONCE)
    for quote in (b"", ev.quote[:100], ev.quote[:-10], b"\x03\x00" + bytes(1000)):
        result = appraise(dataclasses.replace(ev, quote=quote), world.policy(), now=now())
        refused(result, "QUOTE_INVALID")
        assert [c.code for c in result.checks[1:]] == [SKIPPED] * (len(CHECKS) - 1)


@pytest.mark.parametrize(("offset", "what"), [(48 + 64, "MRENCLAVE"), (48 + 320, "REPORTDATA"), (48 + 256, "ISVPRODID")])
def test_flipped_bit_in_the_signed_report_fails_the_quote(world: SimWorld, offset: int, what: str) -> None:
    ev = world.evidence(NONCE)
    quote = bytearray(ev.quote)
    quote[offset] ^= 1
    result = appraise(dataclasses.replace(ev, quote=bytes(quote)), world.policy(), now=now())
    assert not result.affirming
    assert result.failures[0].name == "quote", what


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_mutated_quotes_never_affirm(world: SimWorld, data: st.DataObject) -> None:
    ev = world.evidence(NONCE) if not hasattr(world, "_ev") else world._ev  # type: ignore[attr-defined]
    world._ev = ev  # type: ignore[attr-defined]
    quote = bytearray(ev.quote)
    for _ in range(data.draw(st.integers(1, 4))):
        quote[data.draw(st.integers(0, len(quote) - 1))] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(quote)))
    result = appraise(dataclasses.replace(ev, quote=bytes(quote[:cut]) if cut < 20 else bytes(quote)),
                      world.policy(), now=now())
    assert isinstance(result, AppraisalResult)
    # A flip in unsigned padding could in principle leave the quote valid; signed parts never can.
    if result.affirming:
        assert bytes(quote[:432]) == ev.quote[:432]


def test_collateral_from_pccs_is_cached_until_next_update(world: SimWorld) -> None:
    from sgx_iot.platform.sim.pccs import running

    ev = world.evidence(NONCE, with_collateral=False)
    with running(world.folder) as url:
        source = PccsCollateral(url)
        t = now() + 5  # the PCCS issues collateral from the wall clock: appraise safely after that
        assert appraise(ev, world.policy(), now=t, collateral=source).affirming
        assert appraise(ev, world.policy(), now=t + 60, collateral=source).affirming
        assert source.fetches == 1
        horizon = next_update(source.collateral_for(ev.quote, now=t))
        assert source.fetches == 1
        # Past nextUpdate the cache is refreshed (the sim re-issues collateral valid from the wall clock, so at
        # that far future instant it is still expired: the refusal is then COLLATERAL_EXPIRED).
        refused(appraise(ev, world.policy(), now=horizon + 3600, collateral=source), "COLLATERAL_EXPIRED")
        assert source.fetches == 2


def test_pccs_unreachable(world: SimWorld) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ev = world.evidence(NONCE, with_collateral=False)
    result = appraise(ev, world.policy(), now=now(), collateral=PccsCollateral(f"http://127.0.0.1:{port}", timeout=5))
    refused(result, "COLLATERAL_UNAVAILABLE")


# --- the real dcap-qvl sample quote (Intel root) ----------------------------------------------------------------

SAMPLE_NOW = 1752919277
SAMPLE_MRENCLAVE = bytes.fromhex("33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb")
SAMPLE_MRSIGNER = bytes.fromhex("815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6")


def sample(vectors: Path) -> tuple[Evidence, FileCollateral]:
    folder = vectors / "dcap" / "dcap-qvl-sample"
    key = pem(ec.generate_private_key(ec.SECP256R1()).public_key())
    return (Evidence("gramine", (folder / "sgx_quote").read_bytes(), key, NONCE),
            FileCollateral(folder / "sgx_quote_collateral.json"))


def test_dcap_qvl_sample_default_policy_refuses_its_tcb(vectors: Path) -> None:
    ev, coll = sample(vectors)
    result = appraise(ev, Policy(mrenclaves=frozenset({SAMPLE_MRENCLAVE})), now=SAMPLE_NOW, collateral=coll)
    refused(result, "TCB_STATUS_NOT_ACCEPTED")
    assert result.tcb_status == "ConfigurationAndSWHardeningNeeded"
    assert result.platform == "gramine" and result.platform_id == "d04ec06d4e6d92dc90d0ad3cf5ee2ddf"
    assert sorted(result.advisory_ids) == ["INTEL-SA-00289", "INTEL-SA-00615"]
    assert result.root == "sha256:44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
    e = result.enclave
    assert e is not None
    assert (e.mrenclave, e.mrsigner, e.isv_prod_id, e.isv_svn, e.debug) == (SAMPLE_MRENCLAVE, SAMPLE_MRSIGNER, 0, 0,
                                                                            False)


def test_dcap_qvl_sample_policy_accepting_its_tcb(vectors: Path) -> None:
    ev, coll = sample(vectors)
    policy = Policy(mrenclaves=frozenset({SAMPLE_MRENCLAVE}),
                    accepted_tcb_statuses=frozenset({"UpToDate", "ConfigurationAndSWHardeningNeeded"}))
    result = appraise(ev, policy, now=SAMPLE_NOW, collateral=coll)
    by_name = {c.name: c for c in result.checks}
    assert by_name["tcb_status"].ok and by_name["advisories"].ok and by_name["mrenclave"].ok
    # Its REPORTDATA is "Hello, world!", not an sgx-iot key binding: the only failure.
    assert [c.code for c in result.failures] == ["KEY_BINDING_MISMATCH"]
    rejecting = dataclasses.replace(policy, rejected_advisories=frozenset({"INTEL-SA-00615"}))
    assert appraise(ev, rejecting, now=SAMPLE_NOW, collateral=coll).code == "ADVISORY_REJECTED"
    refused(appraise(ev, policy, now=SAMPLE_NOW + 2, collateral=coll), "COLLATERAL_EXPIRED")
    no_intel = Policy(mrenclaves=frozenset({SAMPLE_MRENCLAVE}), trust_intel=False,
                      roots=(TrustRoot("ab" * 32),))
    refused(appraise(ev, no_intel, now=SAMPLE_NOW, collateral=coll), "UNTRUSTED_ROOT")


def test_dcap_qvl_sample_with_flipped_reportdata(vectors: Path) -> None:
    ev, coll = sample(vectors)
    quote = bytearray(ev.quote)
    quote[48 + 320] ^= 0x01
    policy = Policy(mrenclaves=frozenset({SAMPLE_MRENCLAVE}),
                    accepted_tcb_statuses=frozenset({"ConfigurationAndSWHardeningNeeded"}))
    result = appraise(dataclasses.replace(ev, quote=bytes(quote)), policy, now=SAMPLE_NOW, collateral=coll)
    assert result.failures[0].name == "quote"


def test_pccs_cache_age_is_bounded_so_a_revocation_is_seen(world: SimWorld) -> None:
    from sgx_iot.platform.sim.pccs import running

    ev = world.evidence(NONCE, with_collateral=False)
    with running(world.folder) as url:
        source = PccsCollateral(url, max_age=120)
        t = now() + 5
        assert appraise(ev, world.policy(), now=t, collateral=source).affirming
        world.platform.store.set_pck_revoked()
        # Within max_age the cached (pre-revocation) collateral is used ...
        assert appraise(ev, world.policy(), now=t + 60, collateral=source).affirming
        assert source.fetches == 1
        # ... after it, fresh collateral carries the PCK CRL with the revoked certificate.
        refused(appraise(ev, world.policy(), now=t + 121, collateral=source), "CERTIFICATE_REVOKED")
        assert source.fetches == 2
