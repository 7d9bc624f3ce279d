"""The TEE an enclave runs on: its interface (:mod:`.base`) and implementations (``sim``, ``gramine``)."""

from sgx_iot.platform.base import EnclaveIdentity, EnclaveRuntime, Platform

__all__ = ["EnclaveIdentity", "EnclaveRuntime", "Platform"]
