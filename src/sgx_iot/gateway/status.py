"""``gateway status``: the key, the registration, the outbox (depth, dead letters), the last upload and error.

Read from the state folder only: no enclave is launched and the cloud is not contacted. The key fingerprint is
that of the host's copy of the public key (``public_key.pem``), which every enclave call re-derives and repairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sgx_iot.errors import SgxIotError
from sgx_iot.gateway.outbox import OUTBOX_FILE, DeadLetter, Outbox, OutboxStats
from sgx_iot.gateway.registration import Registration, key_fingerprint, load_registration
from sgx_iot.gateway.state import GatewayState

_DEAD_LETTERS_SHOWN = 10


@dataclass(frozen=True)
class GatewayStatus:
    """A snapshot of one gateway state folder."""

    folder: str
    provisioned: bool
    key_sha256: str | None
    key_error: str | None
    enclave: dict[str, Any] | None
    registration: Registration | None
    outbox: OutboxStats | None
    dead_letters: list[DeadLetter]
    to_resign: int | None = None
    """Signed readings waiting in the outbox whose signature is not by the current key (the gateway was provisioned
    again since they were signed): the next delivery signs them again, once the current key is registered."""

    @property
    def key_matches_registration(self) -> bool | None:
        """Whether the cloud registered the current key (``None`` when either is unknown)."""
        if self.registration is None or self.key_sha256 is None:
            return None
        return self.registration.key_sha256 == self.key_sha256

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "provisioned": self.provisioned,
            "key_sha256": self.key_sha256,
            "key_error": self.key_error,
            "enclave": self.enclave,
            "registration": self.registration.summary() if self.registration else None,
            "key_matches_registration": self.key_matches_registration,
            "outbox": self.outbox.to_dict() if self.outbox else None,
            "to_resign": self.to_resign,
            "dead_letters": [
                {"gateway": d.reading.gateway, "seq": d.reading.seq, "timestamp": d.reading.timestamp,
                 "payload_bytes": len(d.reading.payload), "code": d.code, "message": d.message,
                 "failed_at": d.failed_at, "key_sha256": d.key_sha256}
                for d in self.dead_letters
            ],
        }  # fmt: skip


def gateway_status(state: GatewayState) -> GatewayStatus:
    """Collect the status of ``state`` (never raises for a half-initialised folder: it says what is missing)."""
    provisioned = state.is_provisioned()
    key_sha256 = key_error = None
    enclave = None
    if provisioned:
        try:
            key_sha256 = key_fingerprint(state.public_key())
        except SgxIotError as exc:
            key_error = str(exc)
        try:
            enclave = dict(state.config().enclave)
        except SgxIotError:
            enclave = None
    registration = load_registration(state)
    stats = None
    to_resign: int | None = None
    dead: list[DeadLetter] = []
    if (state.folder / OUTBOX_FILE).is_file():
        with Outbox.in_folder(state.folder) as outbox:
            stats = outbox.stats()
            dead = outbox.dead_letters(_DEAD_LETTERS_SHOWN)
            if key_sha256 is not None:
                to_resign = outbox.count_signed_by_other_key(key_sha256)
    return GatewayStatus(str(state.folder), provisioned, key_sha256, key_error, enclave, registration, stats, dead,
                         to_resign)  # fmt: skip
