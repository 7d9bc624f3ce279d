"""Report body (``sgx_report_body_t``, 384 B), REPORT (``sgx_report_t``, 432 B), TARGETINFO (``sgx_target_info_t``,
512 B). Layouts: SGX_FORMATS.md §5 (linux-sgx ``common/inc/sgx_report.h``).

Reserved bytes are kept as fields so that any input round-trips byte for byte; every field defaults to zeros, so
``ReportBody(mr_enclave=..., report_data=...)`` builds a body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from sgx_iot.sgx._codec import Layout, LayoutStructure, check_fields_match
from sgx_iot.sgx.attributes import Attributes

_ZERO_ATTRIBUTES = Attributes()


@dataclass(frozen=True)
class ReportBody(LayoutStructure):
    """The enclave identity and data that EREPORT produces and quotes carry (384 bytes)."""

    cpu_svn: bytes = bytes(16)
    misc_select: int = 0
    isv_ext_prod_id: bytes = bytes(16)
    attributes: Attributes = _ZERO_ATTRIBUTES
    mr_enclave: bytes = bytes(32)
    mr_signer: bytes = bytes(32)
    config_id: bytes = bytes(64)
    isv_prod_id: int = 0
    isv_svn: int = 0
    config_svn: int = 0
    isv_family_id: bytes = bytes(16)
    report_data: bytes = bytes(64)
    reserved1: bytes = bytes(12)
    reserved2: bytes = bytes(32)
    reserved3: bytes = bytes(32)
    reserved4: bytes = bytes(42)

    SIZE: ClassVar[int] = 384


ReportBody.LAYOUT = Layout(
    "ReportBody",
    384,
    [
        ("cpu_svn", 16, bytes),
        ("misc_select", 4, int),
        ("reserved1", 12, bytes),  # gramine: cet_attributes at 20
        ("isv_ext_prod_id", 16, bytes),
        ("attributes", 16, Attributes),
        ("mr_enclave", 32, bytes),
        ("reserved2", 32, bytes),
        ("mr_signer", 32, bytes),
        ("reserved3", 32, bytes),
        ("config_id", 64, bytes),
        ("isv_prod_id", 2, int),
        ("isv_svn", 2, int),
        ("config_svn", 2, int),
        ("reserved4", 42, bytes),
        ("isv_family_id", 16, bytes),
        ("report_data", 64, bytes),
    ],
)
check_fields_match(ReportBody, ReportBody.LAYOUT)

_ZERO_BODY = ReportBody()


@dataclass(frozen=True)
class Report(LayoutStructure):
    """An EREPORT: body ‖ KEYID ‖ MAC (AES-128-CMAC of the body under the target's report key)."""

    body: ReportBody = _ZERO_BODY
    key_id: bytes = bytes(32)
    mac: bytes = bytes(16)

    SIZE: ClassVar[int] = 432


Report.LAYOUT = Layout("Report", 432, [("body", 384, ReportBody), ("key_id", 32, bytes), ("mac", 16, bytes)])
check_fields_match(Report, Report.LAYOUT)


@dataclass(frozen=True)
class TargetInfo(LayoutStructure):
    """Identity of the enclave a REPORT is targeted at (the one that can verify its MAC), 512 bytes."""

    mr_enclave: bytes = bytes(32)
    attributes: Attributes = _ZERO_ATTRIBUTES
    config_svn: int = 0
    misc_select: int = 0
    config_id: bytes = bytes(64)
    reserved1: bytes = bytes(2)
    reserved2: bytes = bytes(8)
    reserved3: bytes = bytes(384)

    SIZE: ClassVar[int] = 512


TargetInfo.LAYOUT = Layout(
    "TargetInfo",
    512,
    [
        ("mr_enclave", 32, bytes),
        ("attributes", 16, Attributes),
        ("reserved1", 2, bytes),  # gramine: cet_attributes at 48
        ("config_svn", 2, int),
        ("misc_select", 4, int),
        ("reserved2", 8, bytes),
        ("config_id", 64, bytes),
        ("reserved3", 384, bytes),
    ],
)
check_fields_match(TargetInfo, TargetInfo.LAYOUT)
