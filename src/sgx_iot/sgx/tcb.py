"""The TCB statuses of Intel's PCS TCB info (v3) for SGX platforms: one vocabulary for the platform and verifier."""

from __future__ import annotations

TCB_STATUSES: tuple[str, ...] = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
)
"""Every status a TCB level can have."""

VERIFIABLE_TCB_STATUSES: tuple[str, ...] = tuple(s for s in TCB_STATUSES if s != "Revoked")
"""The statuses a quote can verify with (a ``Revoked`` TCB always fails verification)."""
