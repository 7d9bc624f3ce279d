"""EGETKEY and EREPORT on the simulated platform: who can derive which key, and report MACs."""

from __future__ import annotations

import struct
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _sim_helpers import NO_DEBUG_MASK, launch
from sgx_iot.errors import PlatformError
from sgx_iot.platform.base import EnclaveIdentity
from sgx_iot.platform.sim import SimEnclaveRuntime, SimPlatform
from sgx_iot.platform.sim.keys import (
    OWNER_EPOCH,
    aes_cmac,
    report_derivation_data,
    seal_derivation_data,
)
from sgx_iot.sgx.attributes import Attributes
from sgx_iot.sgx.keyrequest import KeyName, KeyPolicy, KeyRequest, seal_key_request
from sgx_iot.sgx.report import Report, TargetInfo

KEY_ID = bytes(range(32))


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> SimPlatform:
    return SimPlatform(tmp_path_factory.mktemp("sim") / "platform")


def seal_request(
    runtime: SimEnclaveRuntime, *, policy: int = KeyPolicy.MRSIGNER, key_id: bytes = KEY_ID, **changes: object
) -> KeyRequest:
    identity = runtime.identity
    request = seal_key_request(key_id=key_id, cpu_svn=identity.cpu_svn, isv_svn=identity.isv_svn, key_policy=policy)
    return replace(request, **changes)  # type: ignore[arg-type]


# --- the primitive, against RFC 4493 ------------------------------------------------------------------------


def test_aes_cmac_rfc4493_vectors() -> None:
    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    assert aes_cmac(key, b"") == bytes.fromhex("bb1d6929e95937287fa37d129b756746")
    message = bytes.fromhex("6bc1bee22e409f96e93d7e117393172a")
    assert aes_cmac(key, message) == bytes.fromhex("070a16b46b4d4144f79bdd9dd04a287c")


# --- derivation-data layout (SGX_FORMATS §4/§5, natural C alignment) -------------------------------------


def _identity() -> EnclaveIdentity:
    return EnclaveIdentity(
        mrenclave=b"\x11" * 32, mrsigner=b"\x22" * 32, isv_prod_id=0x3344, isv_svn=9,
        attributes=Attributes(0x87, 0xE7), misc_select=0xA5A5A5A5, cpu_svn=b"\x05" * 16, config_svn=6,
        config_id=b"\x66" * 64, isv_family_id=b"\x77" * 16, isv_ext_prod_id=b"\x88" * 16,
    )  # fmt: skip


def test_seal_derivation_data_layout() -> None:
    policy = (KeyPolicy.MRENCLAVE | KeyPolicy.MRSIGNER | KeyPolicy.CONFIGID | KeyPolicy.ISVFAMILYID
              | KeyPolicy.ISVEXTPRODID)  # fmt: skip
    request = KeyRequest(
        key_name=KeyName.SEAL, key_policy=int(policy), isv_svn=4, cpu_svn=b"\x03" * 16,
        attribute_mask=Attributes(0xFF0000000000000B, 0x3), key_id=b"\x99" * 32, misc_mask=0xF0000000, config_svn=5,
    )  # fmt: skip
    dd = seal_derivation_data(_identity(), request)
    assert len(dd) == 280
    assert struct.unpack_from("<HH", dd, 0) == (4, int(policy))
    assert dd[4:8] == bytes(4)
    # tmp_attr = (mask | INIT | DEBUG) & SECS; the mask itself follows
    assert dd[8:24] == Attributes((0xFF0000000000000B | 3) & 0x87, 0x3 & 0xE7).to_bytes()
    assert dd[24:40] == Attributes(0xFF0000000000000B, 0x3).to_bytes()
    assert struct.unpack_from("<II", dd, 40) == (0xF0000000 & 0xA5A5A5A5, 0x0FFFFFFF)
    assert dd[48:64] == OWNER_EPOCH == b"THISISOWNEREPOCH"
    assert dd[64:80] == b"\x03" * 16
    assert struct.unpack_from("<HHH", dd, 80) == (4, 0x3344, 5)
    assert dd[86:150] == b"\x66" * 64
    assert dd[150:166] == b"\x77" * 16 and dd[166:182] == b"\x88" * 16
    assert dd[182:214] == b"\x11" * 32 and dd[214:246] == b"\x22" * 32
    assert dd[246:278] == b"\x99" * 32 and dd[278:] == bytes(2)


def test_seal_derivation_data_leaves_out_unselected_identity() -> None:
    request = KeyRequest(key_name=KeyName.SEAL, key_policy=int(KeyPolicy.NOISVPRODID), key_id=KEY_ID)
    dd = seal_derivation_data(_identity(), request)
    assert dd[82:84] == bytes(2)  # NOISVPRODID
    assert dd[84:246] == bytes(162)  # no CONFIGID/KSS ids, no MRENCLAVE, no MRSIGNER


def test_report_derivation_data_layout() -> None:
    target = TargetInfo(mr_enclave=b"\x11" * 32, attributes=Attributes(0x5, 0x3), config_svn=7,
                        misc_select=0x1234, config_id=b"\x66" * 64)  # fmt: skip
    dd = report_derivation_data(target, b"\x05" * 16, b"\x99" * 32)
    assert len(dd) == 192
    assert struct.unpack_from("<H", dd, 0) == (3,) and dd[2:8] == bytes(6)
    assert dd[8:24] == Attributes(0x5, 0x3).to_bytes()
    assert struct.unpack_from("<I", dd, 24) == (0x1234,)
    assert dd[28:44] == OWNER_EPOCH
    assert dd[44:76] == b"\x11" * 32 and dd[76:92] == b"\x05" * 16
    assert struct.unpack_from("<H", dd, 92) == (7,)
    assert dd[94:158] == b"\x66" * 64 and dd[158:190] == b"\x99" * 32 and dd[190:] == bytes(2)


# --- sealing keys: who can derive the same key ------------------------------------------------------------


def test_same_identity_same_key_across_launches_and_instances(platform: SimPlatform) -> None:
    first = launch(platform)
    key = first.get_key(seal_request(first))
    assert len(key) == 16
    assert launch(platform).get_key(seal_request(first)) == key
    again = SimPlatform(platform.store.folder)  # a new process on the same machine
    assert launch(again).get_key(seal_request(first)) == key


def test_another_platform_derives_another_key(platform: SimPlatform, tmp_path: Path) -> None:
    here, there = launch(platform), launch(SimPlatform(tmp_path / "other"))
    assert here.identity.mrenclave == there.identity.mrenclave
    for policy in (KeyPolicy.MRENCLAVE, KeyPolicy.MRSIGNER):
        assert here.get_key(seal_request(here, policy=policy)) != there.get_key(seal_request(there, policy=policy))


def test_mrenclave_policy_separates_enclaves_mrsigner_policy_shares(platform: SimPlatform) -> None:
    one, two = launch(platform, content=b"one"), launch(platform, content=b"two")
    assert one.identity.mrenclave != two.identity.mrenclave
    mre = KeyPolicy.MRENCLAVE
    assert one.get_key(seal_request(one, policy=mre)) != two.get_key(seal_request(two, policy=mre))
    # same signer and product: MRSIGNER-policy keys are shared (that is what enables upgrades)
    assert one.get_key(seal_request(one)) == two.get_key(seal_request(two))


def test_other_signer_derives_another_key(platform: SimPlatform) -> None:
    mine, theirs = launch(platform), launch(platform, key_index=1)
    assert mine.identity.mrenclave == theirs.identity.mrenclave
    assert mine.identity.mrsigner != theirs.identity.mrsigner
    assert mine.get_key(seal_request(mine)) != theirs.get_key(seal_request(theirs))


def test_other_product_id_derives_another_key(platform: SimPlatform) -> None:
    a, b = launch(platform, isv_prod_id=1), launch(platform, isv_prod_id=2)
    assert a.get_key(seal_request(a)) != b.get_key(seal_request(b))


def test_newer_isvsvn_refused_older_allowed(platform: SimPlatform) -> None:
    old, new = launch(platform, isv_svn=1), launch(platform, isv_svn=2)
    with pytest.raises(PlatformError) as err:
        old.get_key(seal_request(old, isv_svn=2))
    assert err.value.code == "EGETKEY_INVALID_ISVSVN"
    # the upgraded enclave can still derive the key its predecessor sealed with, and its own differs
    assert new.get_key(seal_request(new, isv_svn=1)) == old.get_key(seal_request(old))
    assert new.get_key(seal_request(new)) != old.get_key(seal_request(old))


def test_cpusvn_above_platform_refused_below_allowed(platform: SimPlatform) -> None:
    runtime = launch(platform)
    current = bytearray(runtime.identity.cpu_svn)
    higher = bytearray(current)
    higher[0] += 1
    with pytest.raises(PlatformError) as err:
        runtime.get_key(seal_request(runtime, cpu_svn=bytes(higher)))
    assert err.value.code == "EGETKEY_INVALID_CPUSVN"
    lower = bytearray(current)
    lower[0] -= 1
    assert runtime.get_key(seal_request(runtime, cpu_svn=bytes(lower))) != runtime.get_key(seal_request(runtime))
    assert len(runtime.get_key(seal_request(runtime, cpu_svn=bytes(16)))) == 16


def test_config_svn_above_enclave_refused(platform: SimPlatform) -> None:
    runtime = launch(platform)
    with pytest.raises(PlatformError) as err:
        runtime.get_key(seal_request(runtime, config_svn=1))
    assert err.value.code == "EGETKEY_INVALID_CONFIGSVN"


def test_key_id_and_attribute_mask_change_the_key(platform: SimPlatform) -> None:
    runtime = launch(platform)
    base = runtime.get_key(seal_request(runtime))
    assert runtime.get_key(seal_request(runtime, key_id=bytes(32))) != base
    assert runtime.get_key(seal_request(runtime, attribute_mask=Attributes(0xFF0000000000000B, 0x3))) != base


def test_debug_enclave_cannot_derive_production_key(platform: SimPlatform) -> None:
    production, debug = launch(platform), launch(platform, debug=True)
    assert production.identity.mrenclave == debug.identity.mrenclave
    # DEBUG is always bound, even when the request's attribute mask leaves it out
    request = seal_request(production, attribute_mask=Attributes(0, 0))
    assert production.get_key(request) != debug.get_key(request)


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"key_name": KeyName.PROVISION}, "EGETKEY_INVALID_KEYNAME"),
        ({"key_name": KeyName.EINITTOKEN}, "EGETKEY_INVALID_KEYNAME"),
        ({"key_name": 99}, "EGETKEY_INVALID_KEYNAME"),
        ({"key_policy": 0x40}, "EGETKEY_INVALID_POLICY"),
        ({"key_policy": int(KeyPolicy.MRSIGNER | KeyPolicy.CONFIGID)}, "EGETKEY_INVALID_POLICY"),
        ({"reserved1": b"\x00\x01"}, "EGETKEY_RESERVED"),
        ({"reserved2": b"\x01" + bytes(433)}, "EGETKEY_RESERVED"),
    ],
)
def test_invalid_requests_refused(platform: SimPlatform, changes: dict[str, object], code: str) -> None:
    runtime = launch(platform)
    with pytest.raises(PlatformError) as err:
        runtime.get_key(seal_request(runtime, **changes))
    assert err.value.code == code


@settings(max_examples=25, deadline=None)
@given(key_id=st.binary(min_size=32, max_size=32), policy=st.sampled_from([1, 2, 3]), svn=st.integers(0, 1))
def test_sealing_key_is_a_function_of_the_request(platform: SimPlatform, key_id: bytes, policy: int, svn: int) -> None:
    runtime = launch(platform)
    request = seal_request(runtime, key_id=key_id, policy=policy, isv_svn=svn)
    assert runtime.get_key(request) == launch(platform).get_key(KeyRequest.parse(request.to_bytes()))


# --- EREPORT and report verification ----------------------------------------------------------------------


def test_local_attestation_between_enclaves(platform: SimPlatform) -> None:
    a, b = launch(platform, content=b"a"), launch(platform, content=b"b")
    report = a.create_report(b.target_info(), b"\x42" * 64)
    assert Report.parse(report.to_bytes()) == report
    b.verify_report(report)
    assert report.body.mr_enclave == a.identity.mrenclave and report.body.report_data == b"\x42" * 64
    with pytest.raises(PlatformError) as err:
        a.verify_report(report)  # targeted at b, not a
    assert err.value.code == "REPORT_MAC_MISMATCH"


def test_report_verification_refuses_tampering_and_other_platforms(platform: SimPlatform, tmp_path: Path) -> None:
    a = launch(platform)
    report = a.create_report(a.target_info(), bytes(64))
    a.verify_report(report)
    raw = bytearray(report.to_bytes())
    raw[320] ^= 1
    with pytest.raises(PlatformError, match="MAC"):
        a.verify_report(Report.parse(bytes(raw)))
    with pytest.raises(PlatformError, match="MAC"):
        launch(SimPlatform(tmp_path / "other")).verify_report(report)


def test_report_key_is_egetkey_report(platform: SimPlatform) -> None:
    a = launch(platform)
    report = a.create_report(a.target_info(), bytes(64))
    key = a.get_key(KeyRequest(key_name=KeyName.REPORT, key_id=report.key_id))
    assert aes_cmac(key, report.body.to_bytes()) == report.mac


def test_report_data_must_be_64_bytes(platform: SimPlatform) -> None:
    a = launch(platform)
    with pytest.raises(PlatformError) as err:
        a.create_report(a.qe_target_info(), bytes(63))
    assert err.value.code == "EREPORT_BAD_REPORT_DATA"


def test_debug_disabled_mask_still_allows_production_launch(platform: SimPlatform) -> None:
    runtime = launch(platform, mask=NO_DEBUG_MASK)
    assert not runtime.identity.debug
