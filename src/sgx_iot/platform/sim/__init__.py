"""The simulated SGX platform: a software model of EINIT, EGETKEY, EREPORT and a quoting enclave, with its own
Intel-shaped PKI, collateral and PCCS endpoint, producing quotes that ``dcap-qvl`` verifies under its root.

Start with :class:`SimPlatform` (the machine) and :func:`build_collateral`; ``sgx-iot sim`` drives the rest.
"""

from sgx_iot.platform.sim.collateral import Collateral, build_collateral
from sgx_iot.platform.sim.platform import SimEnclaveRuntime, SimPlatform
from sgx_iot.platform.sim.store import TCB_STATUSES, PlatformStore, default_folder

__all__ = [
    "TCB_STATUSES",
    "Collateral",
    "PlatformStore",
    "SimEnclaveRuntime",
    "SimPlatform",
    "build_collateral",
    "default_folder",
]
