"""Helpers shared by the simulated-platform tests (tests/test_sim_*.py): test enclaves and dcap-qvl calls."""

from __future__ import annotations

import asyncio
import functools
import time

import dcap_qvl
from cryptography.hazmat.primitives.asymmetric import rsa

from sgx_iot.platform.sim import Collateral, SimEnclaveRuntime, SimPlatform
from sgx_iot.sgx.attributes import Attributes
from sgx_iot.sgx.measure import EnclaveImage, Page
from sgx_iot.sgx.sigstruct import Sigstruct, generate_signing_key

STATUSES = [
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
]
"""The TCB statuses a quote can verify with (Intel PCS v4 TCB info; Revoked is refused instead)."""

SDK_ATTRIBUTES = Attributes(0x4, 0x3)
SDK_MASK = Attributes(0xFF00FFFFFFFFFFFD, 0xFFFFFFFFFFFFFF1B)  # sgx_sign's default: DEBUG left free
NO_DEBUG_MASK = Attributes(0xFF00FFFFFFFFFFFF, 0xFFFFFFFFFFFFFF1B)  # DisableDebug=1


@functools.cache
def signing_key(index: int = 0) -> rsa.RSAPrivateKey:
    """RSA-3072 e=3 enclave signing keys, generated once per test session (slow to make)."""
    return generate_signing_key()


def make_image(content: bytes = b"sgx-iot test enclave") -> EnclaveImage:
    """A small two-page enclave image whose first page holds ``content``."""
    return EnclaveImage(
        size=0x4000,
        ssa_frame_size=1,
        pages=(Page(0, 0x203, content.ljust(4096, b"\0")), Page(0x1000, 0x201, bytes(4096))),
    )


def make_enclave(
    content: bytes = b"sgx-iot test enclave",
    *,
    isv_svn: int = 1,
    isv_prod_id: int = 7,
    key_index: int = 0,
    attributes: Attributes = SDK_ATTRIBUTES,
    mask: Attributes = SDK_MASK,
) -> tuple[EnclaveImage, Sigstruct]:
    """An image and its signed SIGSTRUCT."""
    image = make_image(content)
    sigstruct = Sigstruct.build(
        enclave_hash=image.mrenclave(), isv_prod_id=isv_prod_id, isv_svn=isv_svn,
        attributes=attributes, attribute_mask=mask, release=False,
    ).sign(signing_key(key_index))  # fmt: skip
    return image, sigstruct


def launch(platform: SimPlatform, **kwargs: object) -> SimEnclaveRuntime:
    """Launch a test enclave (``debug`` goes to EINIT, the rest to :func:`make_enclave`)."""
    debug = bool(kwargs.pop("debug", False))
    image, sigstruct = make_enclave(**kwargs)  # type: ignore[arg-type]
    return platform.launch(image, sigstruct, debug=debug)


def quote_for(runtime: SimEnclaveRuntime, report_data: bytes = bytes(range(64))) -> bytes:
    """A quote of ``runtime`` with ``report_data``."""
    return runtime.get_quote(runtime.create_report(runtime.qe_target_info(), report_data))


def qvl_collateral(collateral: Collateral) -> dcap_qvl.QuoteCollateralV3:
    """The dcap-qvl object for our collateral, through its JSON (as a verifier would load the file)."""
    return dcap_qvl.QuoteCollateralV3.from_json(collateral.to_json())


def verify(
    quote: bytes, collateral: dcap_qvl.QuoteCollateralV3, root_der: bytes, now: int | None = None
) -> dcap_qvl.VerifiedReport:
    """``dcap_qvl.verify_with_root_ca`` at ``now`` (default: the current time)."""
    return dcap_qvl.verify_with_root_ca(quote, collateral, root_der, int(time.time()) if now is None else now)


def fetch_collateral(url: str, quote: bytes) -> dcap_qvl.QuoteCollateralV3:
    """``dcap_qvl.get_collateral`` (a coroutine) run to completion."""

    async def run() -> dcap_qvl.QuoteCollateralV3:
        return await dcap_qvl.get_collateral(url, quote)

    return asyncio.run(run())
