"""Delivering readings: outbox first, enclave signature, upload in batches, per-reading verdicts.

:class:`Delivery` ties the outbox (:mod:`sgx_iot.gateway.outbox`), the enclave (a :class:`Signer`:
``sign`` and ``sign_stream``, normally a :class:`~sgx_iot.gateway.session.GatewaySession`) and the cloud
(:class:`~sgx_iot.gateway.cloud_client.CloudClient`):

1. :meth:`Delivery.accept` stores payloads durably and gives them sequence numbers;
2. :meth:`Delivery.sign_pending` signs what is not signed yet, one (pipelined) ECALL per batch, the canonical
   encoding of :class:`~sgx_iot.verify.readings.Reading`, and refuses to sign with a key other than the registered one;
3. :meth:`Delivery.upload_pending` first checks that the enclave's key is the registered one (otherwise nothing
   is uploaded: the readings wait until the gateway is registered again) and signs again, one ECALL per batch,
   the entries signed by another key (the gateway was provisioned again since: ``init --force``, or an ``init``
   killed after it wrote the new sealed key) -- safe because a reading's fields never change; then it uploads
   signed entries in batches (bounded in count and bytes), deletes the acknowledged ones (``stored`` or
   ``duplicate``), moves readings refused for good to the dead-letter table, keeps the others (the cloud
   unreachable, the gateway not registered yet) for a later attempt.

So the cloud is only ever sent signatures by the key this gateway registered: a ``BAD_SIGNATURE`` refusal means
that the stored signature itself is damaged (or that the cloud registered another key under this name without
this gateway knowing), not that the gateway's key changed.

The long-running loop of ``gateway run`` (input → outbox → :meth:`Delivery.deliver`, with backoff) is
:func:`sgx_iot.gateway.runner.run`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, Protocol

from sgx_iot.enclave.host import Signatures
from sgx_iot.errors import FormatError, SgxIotError, UsageError
from sgx_iot.gateway.cloud_client import CloudClient, CloudRefusal, CloudUnavailable, Verdict
from sgx_iot.gateway.outbox import Outbox
from sgx_iot.gateway.registration import key_fingerprint
from sgx_iot.verify.readings import Reading, SignedReading

DEFAULT_BATCH = 100
MAX_BATCH = 1000
"""The cloud's default limit of readings per request."""
DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024
"""JSON bytes per upload request (the cloud refuses bodies above 2 MiB by default)."""

#: Refusals that may stop being refusals (the gateway registers later): the reading stays in the outbox.
#: (The cloud's ingest says UNKNOWN_GATEWAY; its registry says GATEWAY_NOT_FOUND.)
RETRYABLE_CODES = frozenset({"UNKNOWN_GATEWAY", "GATEWAY_NOT_FOUND"})
#: Whole-request refusals caused by the content of the batch: split it to find and dead-letter the culprit.
_CONTENT_STATUSES = frozenset({400, 413, 422})


class Signer(Protocol):
    """Signs messages in the enclave (one ECALL per call, as far as the ECALL size allows); ``sign([])`` gives the
    enclave's public key and no signature. ``sign_stream`` signs batches read lazily, one result per batch, with
    the next batch's ECALL in flight while the caller handles a result (as
    :class:`~sgx_iot.gateway.session.GatewaySession` does)."""

    def sign(self, messages: Sequence[bytes]) -> Signatures: ...

    def sign_stream(self, batches: Iterable[Sequence[bytes]]) -> Iterator[Signatures]: ...


@dataclass
class DeliveryReport:
    """One delivery round: every verdict the cloud gave, what stayed in the outbox, and why it stopped early."""

    verdicts: list[Verdict] = field(default_factory=list)
    dead_lettered: int = 0
    signed: int = 0
    resigned: int = 0
    pending: int = 0
    error: str | None = None

    @property
    def stored(self) -> int:
        return sum(1 for v in self.verdicts if v.status == "stored")

    @property
    def duplicates(self) -> int:
        return sum(1 for v in self.verdicts if v.status == "duplicate")

    @property
    def refused(self) -> int:
        return sum(1 for v in self.verdicts if v.status == "refused")

    @property
    def acknowledged(self) -> int:
        return sum(1 for v in self.verdicts if v.acknowledged)

    def merge(self, other: DeliveryReport) -> None:
        self.verdicts += other.verdicts
        self.dead_lettered += other.dead_lettered
        self.signed += other.signed
        self.resigned += other.resigned
        self.pending = other.pending
        self.error = other.error

    def to_dict(self) -> dict[str, Any]:
        return {
            "stored": self.stored, "duplicates": self.duplicates, "refused": self.refused,
            "dead_lettered": self.dead_lettered, "resigned": self.resigned, "pending": self.pending,
            "error": self.error,
            "verdicts": [v.to_dict() for v in self.verdicts],
        }  # fmt: skip


class Delivery:
    """Delivers gateway ``gateway``'s readings from ``outbox`` to the cloud through ``client``.

    ``key_sha256`` is the fingerprint of the key the cloud registered: signing with another key (the gateway was
    re-provisioned since), or uploading while the enclave's key is another one, is refused with a ``UsageError``
    asking to register again, before anything is signed or uploaded (the readings stay in the outbox). Without
    ``key_sha256``, readings are (re-)signed with, and uploaded under, whatever key the enclave has.
    """

    def __init__(self, outbox: Outbox, signer: Signer, client: CloudClient, gateway: str, *,
                 key_sha256: str | None = None, batch: int = DEFAULT_BATCH,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> None:  # fmt: skip
        if not 1 <= batch <= MAX_BATCH:
            raise UsageError(f"the batch size must be between 1 and {MAX_BATCH}, not {batch}")
        self.outbox = outbox
        self.signer = signer
        self.client = client
        self.gateway = gateway
        self.key_sha256 = key_sha256
        self.batch = batch
        self.max_request_bytes = max_request_bytes
        self._enclave_key: str | None = None  # learned from the last signing of this round, if any
        self._numbering_error: str | None = None  # why this round could not confirm the outbox's numbering

    # --- the three steps -----------------------------------------------------------------------------------

    def accept(self, payloads: Sequence[bytes], *, source: str | None = None, offset: int | None = None
               ) -> list[Reading]:  # fmt: skip
        """Store ``payloads`` durably as new readings (sequence numbers allocated in the same transaction)."""
        if not payloads:
            return []
        return self.outbox.enqueue(self.gateway, payloads, source=source, offset=offset)

    def sign_pending(self) -> int:
        """Sign every unsigned entry, ``batch`` readings per ECALL; return how many were signed.

        The batches go to the enclave as a stream: while the signatures of one batch are committed to the outbox
        (an fsync), the enclave signs the next. Nothing is signed while the numbering of a new outbox cannot be
        confirmed with the cloud (signing fixes a reading's number)."""
        if not self.outbox.numbering_confirmed() and not self._confirm_numbering():
            return 0
        in_flight: deque[list[Reading]] = deque()

        def batches() -> Iterator[list[bytes]]:
            after = -1
            while readings := self.outbox.unsigned(self.batch, after=after):
                in_flight.append(readings)
                after = readings[-1].seq
                yield [r.to_bytes() for r in readings]

        total = 0
        with closing(self.signer.sign_stream(batches())) as results:  # closed now even when a check raises
            for result in results:
                readings = in_flight.popleft()
                if len(result.signatures) != len(readings):
                    raise FormatError("EcallResponse", "signatures", None,
                                      f"{len(result.signatures)} signatures for {len(readings)} readings")
                key = self._check_key(result)
                self.outbox.set_signatures(((r.seq, s) for r, s in zip(readings, result.signatures, strict=True)),
                                           key)
                total += len(readings)
        return total

    def resign_stale(self, key_sha256: str) -> int:
        """Sign again, ``batch`` readings per ECALL, every signed entry whose signature is not by the key
        ``key_sha256`` (the enclave's current key); return how many were signed again."""
        total = 0
        while readings := self.outbox.signed_by_other_key(key_sha256, self.batch):
            result = self.signer.sign([r.to_bytes() for r in readings])
            if len(result.signatures) != len(readings):
                raise FormatError("EcallResponse", "signatures", None,
                                  f"{len(result.signatures)} signatures for {len(readings)} readings")
            key = self._check_key(result)
            if key != key_sha256:  # provisioned again meanwhile: start over with the new key next round
                raise UsageError(f"the enclave's key changed while the outbox was being signed again (now "
                                 f"{key[:16]}…); send again (the readings stay in the outbox)")
            self.outbox.set_signatures(((r.seq, s) for r, s in zip(readings, result.signatures, strict=True)), key)
            total += len(readings)
        return total

    def upload_pending(self) -> DeliveryReport:
        """Upload every signed entry once (oldest first); see the module docstring for what happens to each.

        Raises ``UsageError`` (nothing uploaded, nothing dead-lettered) when the enclave's key is not the registered
        one: the cloud would refuse every signature of the gateway's current key, and perhaps those of the old one.
        """
        report = DeliveryReport()
        try:
            if self.outbox.ready(1):
                # The key sign_pending just used, else the enclave's key now (one ECALL, no signature).
                key = self._enclave_key or self._check_key(self.signer.sign([]))
                report.resigned = self.resign_stale(key)
                self._upload_signed(key, report)
        finally:
            self._enclave_key = None  # learned again next round: the gateway may be provisioned meanwhile
        report.pending = self.outbox.depth()
        return report

    def _upload_signed(self, key: str, report: DeliveryReport) -> None:
        after = -1
        try:
            while batch := self.outbox.ready(self.batch, after=after, key_sha256=key):
                after = batch[-1].reading.seq
                for chunk in _by_size(batch, self.max_request_bytes):
                    self._upload(chunk, report)
        except CloudUnavailable as exc:
            report.error = str(exc)
        except CloudRefusal as exc:
            report.error = f"the cloud refused the upload: {exc}"
        except FormatError as exc:
            report.error = f"the cloud's answer is malformed: {exc}"
        if report.error is None:
            kept = [v for v in report.verdicts if v.status == "refused" and not self._permanent(v)]
            if kept:
                report.error = f"{len(kept)} reading(s) kept for a later attempt: {kept[0].code}: {kept[0].message}"
        if report.error is not None:
            self.outbox.record_error(report.error)
        elif report.verdicts:
            self.outbox.clear_error()

    def deliver(self) -> DeliveryReport:
        """Sign what is unsigned, then upload what is signed."""
        signed = self.sign_pending()
        report = self.upload_pending()
        report.signed = signed
        if report.error is None and self._numbering_error is not None:
            report.error = self._numbering_error
            self.outbox.record_error(report.error)
        return report

    def send(self, payloads: Sequence[bytes]) -> DeliveryReport:
        """Accept ``payloads`` and deliver everything pending (earlier readings included)."""
        self.accept(payloads)
        return self.deliver()

    # --- internals -----------------------------------------------------------------------------------------

    def _confirm_numbering(self) -> bool:
        """A new outbox (the gateway's outbox was lost, or never made by ``gateway register``) numbers readings
        provisionally: ask the cloud for one more than the highest number it holds for this gateway, and
        continue from there (:meth:`Outbox.continue_from`). False, with the reason kept for the round's report,
        when the cloud cannot tell now (the readings wait, unsigned)."""
        try:
            floor = self.client.next_seq(self.gateway)
        except CloudRefusal as exc:
            if exc.code != "GATEWAY_NOT_FOUND":
                self._numbering_error = f"cannot confirm the outbox's sequence numbers with the cloud: {exc}"
                return False
            floor = 0  # the cloud holds no reading of this gateway: every number is free
        except SgxIotError as exc:  # unreachable, or not an sgx-iot cloud's answer
            self._numbering_error = f"cannot confirm the outbox's sequence numbers with the cloud: {exc}"
            return False
        self.outbox.continue_from(floor)
        self._numbering_error = None
        return True

    def _check_key(self, result: Signatures) -> str:
        """The fingerprint of the key that made ``result``; ``UsageError`` unless it is the registered one. It is
        remembered for this round's upload (no extra ECALL to learn the enclave's key)."""
        actual = key_fingerprint(result.public_key)
        if self.key_sha256 is not None and actual != self.key_sha256:
            message = self._mismatch(actual)
            self.outbox.record_error(message)  # `gateway status` says why the readings wait
            raise UsageError(message)
        self._enclave_key = actual
        return actual

    def _mismatch(self, actual: str) -> str:
        assert self.key_sha256 is not None
        return (f"the enclave signs with key {actual[:16]}… but the cloud registered {self.key_sha256[:16]}… for "
                "this gateway (was it provisioned again?); run `sgx-iot gateway register` again before sending (the "
                "readings stay in the outbox and are signed again with the new key)")

    def _permanent(self, verdict: Verdict) -> bool:
        return not (verdict.code in RETRYABLE_CODES and verdict.gateway == self.gateway)

    def _upload(self, chunk: list[SignedReading], report: DeliveryReport) -> None:
        seqs = [r.reading.seq for r in chunk]
        try:
            verdicts = self.client.upload(chunk)
        except CloudRefusal as exc:
            if exc.status not in _CONTENT_STATUSES:
                self.outbox.record_attempt(seqs, str(exc))
                raise
            if len(chunk) > 1:  # isolate the reading the cloud cannot take
                middle = len(chunk) // 2
                self._upload(chunk[:middle], report)
                self._upload(chunk[middle:], report)
                return
            reading = chunk[0].reading
            verdicts = [Verdict(reading.gateway, reading.seq, "refused", exc.code, exc.message)]
        except CloudUnavailable as exc:
            self.outbox.record_attempt(seqs, str(exc))
            raise
        self.outbox.acknowledge(v.seq for v in verdicts if v.acknowledged)
        refused = [v for v in verdicts if v.status == "refused"]
        report.dead_lettered += self.outbox.dead_letter(
            (v.seq, v.code or "REFUSED", v.message) for v in refused if self._permanent(v))
        kept = [v.seq for v in refused if not self._permanent(v)]
        if kept:
            first = next(v for v in refused if not self._permanent(v))
            self.outbox.record_attempt(kept, f"{first.code}: {first.message}")
        report.verdicts += verdicts


def _by_size(batch: list[SignedReading], budget: int) -> Iterable[list[SignedReading]]:
    """Split ``batch`` into requests whose JSON stays within ``budget`` bytes (one reading per request at least)."""
    chunk: list[SignedReading] = []
    size = 0
    for item in batch:
        cost = 4 * (len(item.reading.payload) + len(item.signature) + 4) // 3 + len(item.reading.gateway) + 120
        if chunk and size + cost > budget:
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += cost
    if chunk:
        yield chunk
