"""The simulated platform's configuration (``platform.json``): its identity and the TCB state its collateral states.

No secrets live here; :mod:`sgx_iot.platform.sim.store` keeps the file next to the platform's keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sgx_iot.errors import PlatformError, UsageError
from sgx_iot.platform.sim.pki import PckInfo
from sgx_iot.sgx.tcb import TCB_STATUSES

CONFIG_FORMAT = "sgx-iot-sim-platform/1"

DEFAULT_CPU_SVN = bytes.fromhex("0e0e0303ff010d000000000000000000")
DEFAULT_PCE_SVN = 13
DEFAULT_PCE_ID = bytes(2)
DEFAULT_FMSPC = bytes.fromhex("0053494d0000")  # 00 'S' 'I' 'M' 00 00: visibly not an Intel FMSPC
DEFAULT_QE_SVN = 8
DEFAULT_VALIDITY_DAYS = 30
DEFAULT_EVALUATION_DATA_NUMBER = 17

_ADVISORY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_tcb_settings(status: str, advisories: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """Validate a TCB status and advisory IDs; ``UsageError`` naming the allowed values otherwise."""
    if status not in TCB_STATUSES:
        raise UsageError(f"unknown TCB status {status!r}; choose one of {', '.join(TCB_STATUSES)}")
    for advisory in advisories:
        if not _ADVISORY.match(advisory):
            raise UsageError(f"advisory ID {advisory!r} is not a plain identifier such as INTEL-SA-00615")
    return status, tuple(dict.fromkeys(advisories))


@dataclass(frozen=True)
class TcbSettings:
    """What the platform's collateral says about its TCB."""

    status: str = "UpToDate"
    advisories: tuple[str, ...] = ()
    pck_revoked: bool = False
    validity_days: int = DEFAULT_VALIDITY_DAYS
    evaluation_data_number: int = DEFAULT_EVALUATION_DATA_NUMBER


@dataclass(frozen=True)
class PlatformConfig:
    """The content of ``platform.json`` (no secrets)."""

    created: str
    pck: PckInfo
    qe_id: bytes
    qe_svn: int
    tcb: TcbSettings = field(default_factory=TcbSettings)

    def to_json(self) -> str:
        """The file text."""
        doc = {
            "format": CONFIG_FORMAT,
            "note": "SIMULATED SGX platform (sgx-iot); not real hardware",
            "created": self.created,
            "cpu_svn": self.pck.cpu_svn.hex(),
            "pce_svn": self.pck.pce_svn,
            "pce_id": self.pck.pce_id.hex(),
            "fmspc": self.pck.fmspc.hex(),
            "ppid": self.pck.ppid.hex(),
            "sgx_type": self.pck.sgx_type,
            "qe_id": self.qe_id.hex(),
            "qe_svn": self.qe_svn,
            "tcb": {
                "status": self.tcb.status,
                "advisories": list(self.tcb.advisories),
                "pck_revoked": self.tcb.pck_revoked,
                "validity_days": self.tcb.validity_days,
                "evaluation_data_number": self.tcb.evaluation_data_number,
            },
        }
        return json.dumps(doc, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, path: Path) -> PlatformConfig:
        """Parse ``platform.json``; ``PlatformError`` PLATFORM_CORRUPT naming the file and the problem."""
        try:
            doc = json.loads(text)
            if doc.get("format") != CONFIG_FORMAT:
                raise ValueError(f"format is {doc.get('format')!r}, expected {CONFIG_FORMAT!r}")
            tcb = doc["tcb"]
            status, advisories = check_tcb_settings(str(tcb["status"]), [str(a) for a in tcb["advisories"]])
            validity = int(tcb["validity_days"])
            if not 0 < validity <= 3650:
                raise ValueError("tcb.validity_days must be between 1 and 3650")
            config = cls(
                created=str(doc["created"]),
                pck=PckInfo(
                    ppid=bytes.fromhex(doc["ppid"]),
                    cpu_svn=bytes.fromhex(doc["cpu_svn"]),
                    pce_svn=int(doc["pce_svn"]),
                    pce_id=bytes.fromhex(doc["pce_id"]),
                    fmspc=bytes.fromhex(doc["fmspc"]),
                    sgx_type=int(doc["sgx_type"]),
                ),
                qe_id=bytes.fromhex(doc["qe_id"]),
                qe_svn=int(doc["qe_svn"]),
                tcb=TcbSettings(status, advisories, bool(tcb["pck_revoked"]), validity,
                                int(tcb["evaluation_data_number"])),
            )  # fmt: skip
            if len(config.qe_id) != 16 or not 0 <= config.qe_svn <= 0xFFFF:
                raise ValueError("qe_id must be 16 bytes and qe_svn a u16")
        except (ValueError, KeyError, TypeError, AttributeError, UsageError) as exc:
            raise PlatformError(
                "PLATFORM_CORRUPT", f"{path} is not a valid simulated-platform configuration ({exc})"
            ) from None
        return config
