"""``gateway run``: the long-running loop that reads lines from a growing file, a FIFO or stdin and delivers them.

It batches lines into the outbox (with the offset reached in a followed file, in the same transaction), then lets
:class:`~sgx_iot.gateway.delivery.Delivery` sign and upload, retrying with exponential backoff and jitter while
the cloud is unreachable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sgx_iot.errors import UsageError
from sgx_iot.gateway.cloud_client import RetryPolicy
from sgx_iot.gateway.delivery import Delivery, DeliveryReport
from sgx_iot.gateway.inputs import LineSource


@dataclass(frozen=True)
class RunOptions:
    """How ``gateway run`` batches, flushes, retries and (for tests and scripts) stops.

    ``max_readings``: stop reading after that many lines (then deliver them and exit). ``idle_exit``: exit once
    that many seconds passed with no new line and no upload progress.
    """

    flush_interval: float = 1.0
    max_readings: int | None = None
    idle_exit: float | None = None
    backoff: RetryPolicy = RetryPolicy(base_delay=1.0, max_delay=60.0)
    poll: float = 0.5

    def __post_init__(self) -> None:
        if self.flush_interval < 0 or (self.idle_exit is not None and self.idle_exit < 0):
            raise UsageError("--flush-interval and --idle-exit must not be negative")
        if self.max_readings is not None and self.max_readings < 1:
            raise UsageError("--max-readings must be at least 1")


@dataclass
class RunSummary:
    """What one ``gateway run`` did."""

    read: int = 0
    skipped: int = 0
    rounds: int = 0
    stored: int = 0
    duplicates: int = 0
    refused: int = 0
    pending: int = 0
    last_error: str | None = None

    def add(self, report: DeliveryReport) -> None:
        self.rounds += 1
        self.stored += report.stored
        self.duplicates += report.duplicates
        self.refused += report.refused
        self.pending = report.pending
        self.last_error = report.error

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run(
    delivery: Delivery,
    source: LineSource,
    options: RunOptions = RunOptions(),
    *,
    emit: Callable[[DeliveryReport], None] = lambda report: None,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> RunSummary:
    """Read lines from ``source`` and deliver them until the input ends, ``stop`` is set, or a bound is reached.

    Lines are stored in the outbox every ``delivery.batch`` lines or ``options.flush_interval`` seconds (with the
    offset reached in a followed file, in the same transaction); each round's report goes to ``emit``. Uploads
    that fail are retried after ``options.backoff.delay(n)`` for the *n*-th failure in a row. When the input ends
    the buffered lines are stored, and delivery goes on until nothing deliverable is left or ``idle_exit`` passes;
    when ``stop`` is set the buffered lines are stored, one upload is tried (unless in backoff) and it returns.
    """
    summary = RunSummary()
    buffer: list[bytes] = []
    buffer_end: int | None = None
    buffered_at = 0.0
    input_done = False
    failures = 0
    retry_at = 0.0
    last_activity = clock()
    need_delivery = True  # what an earlier run left in the outbox

    while True:
        stopping = stop is not None and stop.is_set()
        input_done = input_done or stopping
        now = clock()
        deadlines = [now + options.poll]
        if buffer:
            deadlines.append(buffered_at + options.flush_interval)
        if need_delivery:
            deadlines.append(retry_at)
        if options.idle_exit is not None:
            deadlines.append(last_activity + options.idle_exit)
        timeout = max(0.0, min(deadlines) - now)
        if not input_done:
            for line in source.read(timeout):
                if line.error is not None:
                    summary.skipped += 1
                    delivery.outbox.record_error(line.error)
                    continue
                if not buffer:
                    buffered_at = clock()
                buffer.append(line.data)
                buffer_end = line.end
                summary.read += 1
                last_activity = clock()
                if options.max_readings is not None and summary.read >= options.max_readings:
                    input_done = True
                    break
            input_done = input_done or source.eof
        elif timeout > 0 and not buffer:
            sleep(timeout)
        now = clock()
        if buffer and (len(buffer) >= delivery.batch or now - buffered_at >= options.flush_interval or input_done):
            delivery.accept(buffer, source=source.key, offset=buffer_end)
            buffer = []
            need_delivery = True
        if need_delivery and now >= retry_at:
            report = delivery.deliver()
            summary.add(report)
            emit(report)
            if report.acknowledged:
                last_activity = clock()
            if report.error is not None:
                failures += 1
                retry_at = clock() + options.backoff.delay(failures)
            else:
                failures, retry_at, need_delivery = 0, 0.0, False
        if buffer:
            continue
        if stopping or (input_done and not need_delivery):
            break
        if options.idle_exit is not None and clock() - last_activity >= options.idle_exit:
            break
    summary.pending = delivery.outbox.depth()
    return summary
