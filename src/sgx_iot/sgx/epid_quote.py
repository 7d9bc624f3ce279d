"""EPID quote (``sgx_quote_t``, linux-sgx ``common/inc/sgx_quote.h``). Layout: SGX_FORMATS.md §6.

``version u16 ‖ sign_type u16 ‖ epid_group_id[4] ‖ qe_svn u16 ‖ pce_svn u16 ‖ xeid u32 ‖ basename[32] ‖
report_body (384) ‖ signature_len u32 ‖ signature``. IAS reports carry only the first 432 bytes (the "quote body",
``isvEnclaveQuoteBody``), so both forms parse: exactly 432 bytes (``signature_len is None``), or the full quote.
The EPID signature itself cannot be checked without Intel's (retired) service; it is kept as opaque bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from sgx_iot.sgx._codec import Reader, u16, u32
from sgx_iot.sgx.report import ReportBody

BODY_SIZE = 432


@dataclass(frozen=True)
class EpidQuote:
    """An EPID quote, or just its 432-byte body when ``signature_len`` is None."""

    version: int = 2
    sign_type: int = 0
    epid_group_id: bytes = bytes(4)
    qe_svn: int = 0
    pce_svn: int = 0
    xeid: int = 0
    basename: bytes = bytes(32)
    report_body: ReportBody = ReportBody()
    signature_len: int | None = None
    signature: bytes = b""

    BODY_SIZE: ClassVar[int] = BODY_SIZE

    def __post_init__(self) -> None:
        for name, bits in (("version", 16), ("sign_type", 16), ("qe_svn", 16), ("pce_svn", 16), ("xeid", 32)):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value < 1 << bits:
                raise ValueError(f"EpidQuote.{name} = {value!r} does not fit in {bits} bits")
        if len(self.epid_group_id) != 4 or len(self.basename) != 32:
            raise ValueError("EpidQuote.epid_group_id must be 4 bytes and basename 32 bytes")
        if self.signature_len is None:
            if self.signature:
                raise ValueError("EpidQuote: a body-only quote (signature_len None) has no signature")
        elif self.signature_len != len(self.signature) or self.signature_len > 0xFFFFFFFF:
            raise ValueError(f"EpidQuote.signature_len {self.signature_len} != len(signature) {len(self.signature)}")

    @classmethod
    def parse(cls, data: bytes) -> EpidQuote:
        """A 432-byte quote body or a full quote whose ``signature_len`` matches the remaining bytes exactly."""
        reader = Reader(data, "EpidQuote")
        fields = {
            "version": reader.u16("version"),
            "sign_type": reader.u16("sign_type"),
            "epid_group_id": reader.bytes(4, "epid_group_id"),
            "qe_svn": reader.u16("qe_svn"),
            "pce_svn": reader.u16("pce_svn"),
            "xeid": reader.u32("xeid"),
            "basename": reader.bytes(32, "basename"),
            "report_body": ReportBody.parse(reader.bytes(ReportBody.SIZE, "report_body")),
        }
        if reader.remaining == 0:
            return cls(**fields)
        signature_len = reader.u32("signature_len")
        if signature_len != reader.remaining:
            raise reader.fail(
                "signature_len", f"says {signature_len} bytes but {reader.remaining} follow", offset=BODY_SIZE
            )
        return cls(**fields, signature_len=signature_len, signature=reader.rest("signature"))

    def body_bytes(self) -> bytes:
        """The first 432 bytes (what IAS reports as ``isvEnclaveQuoteBody``)."""
        return b"".join(
            [
                u16(self.version),
                u16(self.sign_type),
                self.epid_group_id,
                u16(self.qe_svn),
                u16(self.pce_svn),
                u32(self.xeid),
                self.basename,
                self.report_body.to_bytes(),
            ]
        )

    def to_bytes(self) -> bytes:
        """The body, plus ``signature_len ‖ signature`` for a full quote."""
        if self.signature_len is None:
            return self.body_bytes()
        return self.body_bytes() + u32(self.signature_len) + self.signature

    @property
    def is_body_only(self) -> bool:
        """True when this is only the 432-byte body (no signature)."""
        return self.signature_len is None
