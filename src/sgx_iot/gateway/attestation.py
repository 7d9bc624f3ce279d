"""``gateway attest``: evidence that the gateway's key lives in its enclave, fresh for a verifier's nonce.

The enclave unseals the key, derives the public key itself and makes a REPORT whose REPORTDATA is
``bind_key(public key, nonce)``; the platform's quoting enclave turns it into a DCAP quote. The evidence
(:class:`sgx_iot.verify.evidence.Evidence`) carries the quote, that public key, the nonce, the enclave identity
and, on request, the platform's collateral.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sgx_iot.errors import UsageError
from sgx_iot.gateway.provisioning import identity_summary
from sgx_iot.gateway.session import GatewaySession
from sgx_iot.gateway.state import GatewayState, public_key_pem
from sgx_iot.sgx.keybinding import check_key_binding
from sgx_iot.verify.evidence import Evidence

MIN_NONCE = 16
MAX_NONCE = 64


def parse_nonce(text: str) -> bytes:
    """A nonce given as hex (16 to 64 bytes); ``UsageError`` otherwise."""
    try:
        nonce = bytes.fromhex(text.strip())
    except ValueError:
        raise UsageError(f"the nonce {text!r} is not hexadecimal") from None
    if not MIN_NONCE <= len(nonce) <= MAX_NONCE:
        raise UsageError(f"the nonce must be {MIN_NONCE} to {MAX_NONCE} bytes ({2 * MIN_NONCE} to {2 * MAX_NONCE} "
                         f"hex digits), not {len(nonce)} bytes")
    return nonce


def collect_evidence(session: GatewaySession, nonce: bytes, *, collateral: bool = False) -> Evidence:
    """Evidence for ``nonce`` from a running gateway session (``collateral`` adds the platform's)."""
    if not MIN_NONCE <= len(nonce) <= MAX_NONCE:
        raise UsageError(f"the nonce must be {MIN_NONCE} to {MAX_NONCE} bytes, not {len(nonce)}")
    attestation = session.attest(nonce)
    # Sanity: what the enclave reported must bind the key it returned (it always does unless something is broken).
    check_key_binding(attestation.report.body.report_data, attestation.public_key, nonce)
    client = session.client
    assert client.identity is not None
    return Evidence(
        platform=client.platform_kind,
        quote=attestation.quote,
        public_key_pem=public_key_pem(attestation.public_key),
        nonce=nonce,
        enclave=identity_summary(client.identity),
        collateral=platform_collateral(session) if collateral else None,
    )


def attest(state: GatewayState, nonce: bytes, *, collateral: bool = False, platform: Path | None = None) -> Evidence:
    """Start the gateway's enclave, attest its key for ``nonce``, stop the enclave."""
    with GatewaySession(state, platform=platform) as session:
        return collect_evidence(session, nonce, collateral=collateral)


def platform_collateral(session: GatewaySession) -> dict[str, Any]:
    """The platform's collateral (``QuoteCollateralV3`` JSON object) for verifying this gateway's quotes."""
    if session.client.platform_kind != "simulated":
        raise UsageError("collateral can only be attached on the simulated platform; on real SGX the verifier "
                         "fetches it from a PCCS")
    from sgx_iot.platform.sim.collateral import build_collateral
    from sgx_iot.platform.sim.store import PlatformStore

    # The host never loads the platform's root secret or QE key: collateral needs only the (public-role) PKI.
    store = PlatformStore.open(session.platform_folder, create=False, secrets=False)
    return json.loads(build_collateral(store).to_json())  # type: ignore[no-any-return]
