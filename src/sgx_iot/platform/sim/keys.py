"""EGETKEY and the report MAC of the simulated platform (SGX_FORMATS.md §4, §5).

The model is the SGX SDK simulator's (linux-sgx ``sdk/simulation/tinst/t_instructions.cpp`` ``_EGETKEY`` /
``_EREPORT``, ``deriv.h``): key = AES-128-CMAC(base key[key name], derivation data), with the derivation data laid
out as ``dd_seal_key_t`` / ``dd_report_key_t`` of the current SDK (natural C alignment)::

    dd_seal_key_t (280 B): key_name u16 @0, key_policy u16 @2, tmp_attr @8, attribute_mask @24,
        tmp_misc u32 @40, ~misc_mask u32 @44, owner_epoch[16] @48, cpu_svn[16] @64, isv_svn u16 @80,
        isv_prod_id u16 @82, config_svn u16 @84, config_id[64] @86, isv_family_id[16] @150,
        isv_ext_prod_id[16] @166, mrenclave @182, mrsigner @214, key_id @246, padding[2]
    dd_report_key_t (192 B): key_name u16 @0, attributes @8, misc_select u32 @24, owner_epoch[16] @28,
        mrenclave @44, cpu_svn[16] @76, config_svn u16 @92, config_id[64] @94, key_id @158, padding[2]

What differs from the SDK simulator, on purpose: its base keys are constants shared by every machine, so any
simulation-mode enclave anywhere could unseal any other's data; here each base key is derived from the platform's
random 32-byte secret, so another platform folder derives other keys. Like hardware (and unlike the SDK simulator,
which accepts only three fixed CPUSVN values), a request for a CPUSVN, ISVSVN or CONFIGSVN above the enclave's is
refused and an all-zero CPUSVN is a valid, lowest value.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms

from sgx_iot.errors import PlatformError
from sgx_iot.platform.base import EnclaveIdentity
from sgx_iot.sgx.attributes import AttributeFlags, Attributes
from sgx_iot.sgx.keyrequest import KeyName, KeyPolicy, KeyRequest
from sgx_iot.sgx.report import ReportBody, TargetInfo

OWNER_EPOCH = b"THISISOWNEREPOCH"
"""The SDK simulator's hard-coded OWNEREPOCH (``SIMU_OWNER_EPOCH_MSR``)."""

_SEAL_DD = struct.Struct("<HH4x16s16sII16s16sHHH64s16s16s32s32s32s2x")
_REPORT_DD = struct.Struct("<H6x16sI16s32s16sH64s32s2x")
assert _SEAL_DD.size == 280 and _REPORT_DD.size == 192

_KSS_POLICIES = int(KeyPolicy.NOISVPRODID | KeyPolicy.CONFIGID | KeyPolicy.ISVFAMILYID | KeyPolicy.ISVEXTPRODID)
_ALL_POLICIES = int(KeyPolicy.MRENCLAVE | KeyPolicy.MRSIGNER) | _KSS_POLICIES  # plain ints: ~IntFlag drops bits
_ALWAYS_BOUND = int(AttributeFlags.INIT | AttributeFlags.DEBUG)  # EGETKEY always binds these attribute bits
_U32 = 0xFFFFFFFF


def aes_cmac(key: bytes, data: bytes) -> bytes:
    """AES-128-CMAC of ``data`` (16 bytes)."""
    mac = cmac.CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def base_key(secret: bytes, key_name: int) -> bytes:
    """The platform's 16-byte base key for ``key_name`` (the simulator's BASE_*_KEY, per platform)."""
    label = b"sgx-iot simulated SGX base key" + struct.pack("<H", key_name)
    return hmac.new(secret, label, hashlib.sha256).digest()[:16]


def _svn_above(requested: bytes, current: bytes) -> bool:
    # CPUSVN is compared component by component: a request may name any TCB at or below the current one.
    return any(r > c for r, c in zip(requested, current, strict=True))


def seal_derivation_data(identity: EnclaveIdentity, request: KeyRequest) -> bytes:
    """The 280-byte ``dd_seal_key_t`` for ``request`` made by the enclave ``identity``."""
    policy = request.key_policy
    secs = identity.attributes
    tmp_attr = Attributes((request.attribute_mask.flags | _ALWAYS_BOUND) & secs.flags,
                          request.attribute_mask.xfrm & secs.xfrm)  # fmt: skip
    use_config = bool(policy & KeyPolicy.CONFIGID)
    return _SEAL_DD.pack(
        request.key_name,
        policy,
        tmp_attr.to_bytes(),
        request.attribute_mask.to_bytes(),
        request.misc_mask & identity.misc_select,
        ~request.misc_mask & _U32,
        OWNER_EPOCH,
        request.cpu_svn,
        request.isv_svn,
        0 if policy & KeyPolicy.NOISVPRODID else identity.isv_prod_id,
        request.config_svn if use_config else 0,
        identity.config_id if use_config else bytes(64),
        identity.isv_family_id if policy & KeyPolicy.ISVFAMILYID else bytes(16),
        identity.isv_ext_prod_id if policy & KeyPolicy.ISVEXTPRODID else bytes(16),
        identity.mrenclave if policy & KeyPolicy.MRENCLAVE else bytes(32),
        identity.mrsigner if policy & KeyPolicy.MRSIGNER else bytes(32),
        request.key_id,
    )


def report_derivation_data(target: TargetInfo, cpu_svn: bytes, key_id: bytes) -> bytes:
    """The 192-byte ``dd_report_key_t`` of the enclave described by ``target`` on a platform at ``cpu_svn``."""
    return _REPORT_DD.pack(
        int(KeyName.REPORT),
        target.attributes.to_bytes(),
        target.misc_select,
        OWNER_EPOCH,
        target.mr_enclave,
        cpu_svn,
        target.config_svn,
        target.config_id,
        key_id,
    )


def target_of(identity: EnclaveIdentity) -> TargetInfo:
    """The TARGETINFO of an enclave identity."""
    return TargetInfo(mr_enclave=identity.mrenclave, attributes=identity.attributes,
                      config_svn=identity.config_svn, misc_select=identity.misc_select,
                      config_id=identity.config_id)  # fmt: skip


def report_key(secret: bytes, cpu_svn: bytes, target: TargetInfo, key_id: bytes) -> bytes:
    """The report key of the enclave ``target`` (what EREPORT MACs with and EGETKEY REPORT returns)."""
    return aes_cmac(base_key(secret, KeyName.REPORT), report_derivation_data(target, cpu_svn, key_id))


def report_mac(key: bytes, body: ReportBody) -> bytes:
    """The REPORT MAC: AES-128-CMAC over the 384-byte body."""
    return aes_cmac(key, body.to_bytes())


def egetkey(secret: bytes, cpu_svn: bytes, identity: EnclaveIdentity, request: KeyRequest) -> bytes:
    """EGETKEY for the enclave ``identity`` on a platform with ``secret`` at ``cpu_svn``.

    Raises ``PlatformError`` with EGETKEY_RESERVED, EGETKEY_INVALID_POLICY, EGETKEY_INVALID_KEYNAME,
    EGETKEY_INVALID_ISVSVN, EGETKEY_INVALID_CPUSVN or EGETKEY_INVALID_CONFIGSVN.
    """
    if any(request.reserved1) or any(request.reserved2):
        raise PlatformError("EGETKEY_RESERVED", "the key request has non-zero reserved bytes")
    if request.key_policy & ~_ALL_POLICIES:
        raise PlatformError("EGETKEY_INVALID_POLICY", f"key policy 0x{request.key_policy:x} sets reserved bits")
    if request.key_policy & _KSS_POLICIES and not identity.attributes.flags & int(AttributeFlags.KSS):
        raise PlatformError(
            "EGETKEY_INVALID_POLICY", "key policy uses KSS bits (CONFIGID, ISVFAMILYID, …) but the enclave has no KSS"
        )
    if request.key_name == KeyName.REPORT:
        return report_key(secret, cpu_svn, target_of(identity), request.key_id)
    if request.key_name != KeyName.SEAL:
        raise PlatformError(
            "EGETKEY_INVALID_KEYNAME",
            f"key name {request.key_name} is not available: the simulated platform derives SEAL and REPORT keys only",
        )
    if request.isv_svn > identity.isv_svn:
        raise PlatformError(
            "EGETKEY_INVALID_ISVSVN",
            f"a seal key for ISVSVN {request.isv_svn} was requested by an enclave at ISVSVN {identity.isv_svn}; "
            "an enclave may derive keys of its own or older versions only",
        )
    if request.config_svn > identity.config_svn:
        raise PlatformError(
            "EGETKEY_INVALID_CONFIGSVN",
            f"CONFIGSVN {request.config_svn} is above the enclave's {identity.config_svn}",
        )
    if _svn_above(request.cpu_svn, cpu_svn):
        raise PlatformError(
            "EGETKEY_INVALID_CPUSVN",
            f"CPUSVN {request.cpu_svn.hex()} is above the platform's {cpu_svn.hex()}",
        )
    return aes_cmac(base_key(secret, KeyName.SEAL), seal_derivation_data(identity, request))
