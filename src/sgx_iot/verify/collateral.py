"""Where the verifier gets DCAP collateral (TCB info, QE identity, CRLs and their issuer chains).

Three sources, one interface (:class:`CollateralSource`):

* :class:`FileCollateral` — a ``QuoteCollateralV3`` JSON file (as ``sgx-iot sim collateral`` or
  ``QuoteCollateralV3.to_json()`` writes it);
* :class:`PccsCollateral` — a PCCS or Intel PCS speaking the v4 API (``{url}/sgx/certification/v4/tcb?fmspc=…``,
  ``/qe/identity``, ``/pckcrl?ca=…``, ``/rootcacrl``; the simulated platform's ``sgx-iot sim pccs`` speaks it),
  **cached** per (FMSPC, CA) until the earliest ``nextUpdate`` of what it fetched;
* :class:`FixedCollateral` — collateral already in memory (for example the one carried inside evidence).

Collateral is signed by the PKI it describes, so it is not trusted because of where it came from: the appraisal
verifies its signatures and validity window against the policy's root every time.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import dcap_qvl
from cryptography import x509

from sgx_iot.errors import FormatError
from sgx_iot.sgx.dcap_quote import DcapQuote
from sgx_iot.verify.dcap import QuoteCollateralV3, fetch_collateral, load_collateral


class CollateralSource(Protocol):
    """Gives the collateral needed to verify a quote at a given time."""

    def collateral_for(self, quote: bytes, *, now: int) -> QuoteCollateralV3:
        """Collateral for ``quote``; ``VerificationError("COLLATERAL_UNAVAILABLE")`` if it cannot be had."""
        ...


@dataclass(frozen=True)
class ValidityWindow:
    """When a piece of collateral was issued and the last second it may be used (Unix seconds, inclusive).

    dcap-qvl accepts TCB info and QE identity up to and including their ``nextUpdate``, and a CRL only strictly
    before its ``nextUpdate``; ``until`` states both the same way.
    """

    name: str
    issued: int
    until: int


def validity_windows(collateral: QuoteCollateralV3) -> tuple[ValidityWindow, ...]:
    """The issue/next-update window of the TCB info, the QE identity and both CRLs.

    Raises ``FormatError`` when a date cannot be read (the collateral is then unusable anyway).
    """
    return _windows(collateral.tcb_info, collateral.qe_identity, bytes(collateral.root_ca_crl),
                    bytes(collateral.pck_crl))


@functools.lru_cache(maxsize=64)
def _windows(tcb_info: str, qe_identity: str, root_ca_crl: bytes, pck_crl: bytes) -> tuple[ValidityWindow, ...]:
    windows = []
    for name, text in (("TCB info", tcb_info), ("QE identity", qe_identity)):
        try:
            doc = json.loads(text)
            windows.append(ValidityWindow(name, _iso(doc["issueDate"]), _iso(doc["nextUpdate"])))
        except (ValueError, KeyError, TypeError):
            raise FormatError("QuoteCollateralV3", name, None, "issueDate/nextUpdate missing or not ISO 8601") from None
    for name, der in (("root CA CRL", root_ca_crl), ("PCK CRL", pck_crl)):
        try:
            crl = x509.load_der_x509_crl(der)
        except ValueError:
            raise FormatError("QuoteCollateralV3", name, None, "not a DER certificate revocation list") from None
        last, nxt = crl.last_update_utc, crl.next_update_utc
        if nxt is None:
            raise FormatError("QuoteCollateralV3", name, None, "has no nextUpdate")
        windows.append(ValidityWindow(name, int(last.timestamp()), int(nxt.timestamp()) - 1))
    return tuple(windows)


def next_update(collateral: QuoteCollateralV3) -> int:
    """The last second (Unix, inclusive) at which every piece of ``collateral`` is still usable."""
    return min(w.until for w in validity_windows(collateral))


def _iso(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


class FixedCollateral:
    """Collateral held in memory, returned for every quote."""

    def __init__(self, collateral: QuoteCollateralV3 | str | bytes | dict[str, Any]) -> None:
        self.collateral = collateral if isinstance(collateral, QuoteCollateralV3) else load_collateral(collateral)

    def collateral_for(self, quote: bytes, *, now: int) -> QuoteCollateralV3:
        """The held collateral (whatever the quote)."""
        return self.collateral


class FileCollateral(FixedCollateral):
    """Collateral read once from a ``QuoteCollateralV3`` JSON file (``FormatError`` if it is not one)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        super().__init__(self.path.read_bytes())


DEFAULT_MAX_AGE_SECONDS = 3600


class PccsCollateral:
    """Collateral fetched from a PCCS/PCS (v4 API) and cached per (FMSPC, CA) until its earliest ``nextUpdate``,
    and at most ``max_age`` seconds.

    Intel's collateral is valid for about a month, but a PCK revocation or a TCB recovery is published in fresh
    collateral long before that: the age limit bounds how long a revoked platform can still be accepted.
    Thread-safe. ``fetch`` is the function that does the HTTP requests (default: ``verify.dcap.fetch_collateral``);
    failures raise ``VerificationError("COLLATERAL_UNAVAILABLE")``.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        max_age: int = DEFAULT_MAX_AGE_SECONDS,
        fetch: Callable[..., QuoteCollateralV3] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.max_age = max_age
        self._fetch = fetch or fetch_collateral
        self._cache: dict[tuple[str, str], tuple[QuoteCollateralV3, int]] = {}
        self._lock = threading.Lock()
        self.fetches = 0

    def collateral_for(self, quote: bytes, *, now: int) -> QuoteCollateralV3:
        """Cached collateral for ``quote``'s platform, fetched again once ``now`` passes its ``nextUpdate`` or the
        cached copy is older than ``max_age``."""
        key = _platform_key(quote)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and now <= hit[1]:
                return hit[0]
            collateral = self._fetch(self.url, quote, timeout=self.timeout)
            self.fetches += 1
            self._cache[key] = (collateral, min(next_update(collateral), now + self.max_age))
            return collateral


def _platform_key(quote: bytes) -> tuple[str, str]:
    """(FMSPC, PCK issuer CA) — what PCS collateral depends on (``FormatError`` if the quote has neither)."""
    DcapQuote.parse(quote)
    try:
        parsed = dcap_qvl.Quote.parse(quote)
        return parsed.fmspc(), parsed.ca()
    except ValueError as exc:
        raise FormatError("DcapQuote", "certification", None, f"cannot read the FMSPC and CA: {exc}") from None
