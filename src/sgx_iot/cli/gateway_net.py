"""`sgx-iot gateway register | send | run | status`: the gateway's network side (registered onto `gateway`)."""

from __future__ import annotations

import datetime
import itertools
import json
import signal
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from sgx_iot.cli._common import EXIT_USAGE, EXIT_VERIFICATION_FAILED, console, err_console, handle_errors, print_json
from sgx_iot.cli.gateway import app, platform_option, state_option
from sgx_iot.enclave.host import Signatures
from sgx_iot.errors import UsageError
from sgx_iot.gateway.cloud_client import CloudClient, RetryPolicy
from sgx_iot.gateway.delivery import DEFAULT_BATCH, Delivery, DeliveryReport
from sgx_iot.gateway.inputs import open_source
from sgx_iot.gateway.outbox import Outbox
from sgx_iot.gateway.registration import register as register_gateway
from sgx_iot.gateway.registration import require_registration
from sgx_iot.gateway.runner import RunOptions
from sgx_iot.gateway.runner import run as run_delivery
from sgx_iot.gateway.session import GatewaySession
from sgx_iot.gateway.signing import open_input
from sgx_iot.gateway.state import GatewayState
from sgx_iot.gateway.status import gateway_status
from sgx_iot.verify.readings import MAX_PAYLOAD

_CLOUD_HELP = "Cloud URL (default: the one the gateway registered with)."


def _json_option() -> Any:
    return typer.Option(False, "--json", help="Print machine-readable JSON.")


def _batch_option() -> Any:
    return typer.Option(DEFAULT_BATCH, "--batch", min=1, max=1000, help="Readings per ECALL and per upload.")


def _say(text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True)


def _warn(text: str) -> None:
    err_console.print(text, highlight=False, soft_wrap=True)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


# --- register ----------------------------------------------------------------------------------------------------

def register(
    cloud: str = typer.Option(..., "--cloud", help="The cloud's URL, e.g. http://127.0.0.1:8000."),
    name: str = typer.Option(..., "--name", help="The gateway's name (1-64 of A-Z a-z 0-9 . _ -, not . or ..)."),
    collateral: bool = typer.Option(False, "--collateral", help="Attach the simulated platform's collateral to "
                                    "the evidence (when the cloud has no collateral source of its own)."),
    attempts: int = typer.Option(3, "--attempts", min=1, help="Tries per request when the cloud cannot be "
                                 "reached."),
    state: Path | None = state_option(),
    platform: Path | None = platform_option(),
    json_: bool = _json_option(),
) -> None:
    """Register the gateway with a cloud: challenge, attest in the enclave, upload the evidence.

    The cloud's nonce is bound with the enclave-derived public key into the
    quote; on success the cloud returns an EAR attestation-result token, and the
    registration (name, cloud URL, token, key fingerprint) is stored in the
    state folder for `gateway send` and `gateway run`. Exit 1 when the cloud
    refuses the evidence (its code is printed, e.g. MRENCLAVE_NOT_ALLOWED), 2
    when it cannot be reached.

    Examples:

      sgx-iot gateway register --cloud http://127.0.0.1:8000 --name gw-01
    """
    with CloudClient(cloud, retry=RetryPolicy(attempts=attempts)) as client:
        registration = register_gateway(GatewayState(state), client.url, name, client=client, platform=platform,
                                        collateral=collateral)  # fmt: skip
    if json_:
        print_json({"registered": True, **registration.summary(), "ear": registration.ear})
        return
    _say(f"Registered gateway [bold]{registration.name}[/] with {registration.cloud}")
    _say(f"  key SHA-256  {registration.key_sha256}")
    _say(f"  MRENCLAVE    {registration.enclave.get('mrenclave', '?')}")
    _say(f"  TCB status   {registration.tcb_status}")
    _say(f"  policy       {registration.policy_id}")
    _say(f"  EAR expires  {_when(registration.ear_expires_at)}")


# --- send ----------------------------------------------------------------------------------------------------------

@contextmanager
def _delivery(state: GatewayState, cloud: str | None, batch: int, platform: Path | None,
              retry: RetryPolicy, timeout: float) -> Iterator[tuple[Delivery, ExitStack]]:  # fmt: skip
    """The outbox, cloud client and enclave session of the registered gateway (the enclave started lazily)."""
    registration = require_registration(state)
    with ExitStack() as stack:
        outbox = stack.enter_context(Outbox.in_folder(state.folder))
        client = stack.enter_context(CloudClient(cloud or registration.cloud, retry=retry, timeout=timeout))
        signer = _LazySession(state, platform, stack)
        yield Delivery(outbox, signer, client, registration.name, key_sha256=registration.key_sha256,
                       batch=batch), stack  # fmt: skip


class _LazySession:
    """Starts the enclave on the first signature only (nothing to sign: no enclave launch)."""

    def __init__(self, state: GatewayState, platform: Path | None, stack: ExitStack) -> None:
        self._state, self._platform, self._stack = state, platform, stack
        self._session: GatewaySession | None = None

    def _started(self) -> GatewaySession:
        if self._session is None:
            self._session = self._stack.enter_context(GatewaySession(self._state, platform=self._platform))
        return self._session

    def sign(self, messages: Any) -> Any:
        return self._started().sign(messages)

    def sign_stream(self, batches: Iterable[Sequence[bytes]]) -> Iterator[Signatures]:
        batches = iter(batches)
        first = next(batches, None)
        if first is not None:
            yield from self._started().sign_stream(itertools.chain([first], batches))


def _read_payloads(files: list[Path]) -> list[bytes]:
    payloads = []
    for path in files:
        with open_input(path) as handle:
            data = handle.read(MAX_PAYLOAD + 1)
        if len(data) > MAX_PAYLOAD:
            raise UsageError(f"{path} is larger than {MAX_PAYLOAD} bytes, the most one reading may carry")
        payloads.append(data)
    return payloads


def _print_report(report: DeliveryReport) -> None:
    for v in report.verdicts:
        if v.status == "refused":
            _say(f"  seq {v.seq:<8} [bold red]refused[/]    {v.code}: {v.message}")
        else:
            _say(f"  seq {v.seq:<8} [green]{v.status}[/]")
    resigned = f", {report.resigned} signed again with the current key" if report.resigned else ""
    _say(f"{report.stored} stored, {report.duplicates} duplicate, {report.refused} refused{resigned}; "
         f"{report.pending} waiting in the outbox")


def _finish(error: str | None, pending: int, refused: int) -> None:
    """Exit 1 if the cloud refused readings, 2 if some could not be delivered, else return (exit 0)."""
    if error:
        _warn(f"[bold red]error:[/] {error}; {pending} reading(s) kept in the outbox (`sgx-iot gateway "
                          "send` or `gateway run` delivers them later)")
    if refused:
        raise typer.Exit(EXIT_VERIFICATION_FAILED)
    if error and pending:
        raise typer.Exit(EXIT_USAGE)


def send(
    files: list[Path] = typer.Argument(None, help="Files to send, one reading each.", show_default=False),
    stdin: bool = typer.Option(False, "--stdin", help="Send one reading per line of standard input instead."),
    cloud: str | None = typer.Option(None, "--cloud", help=_CLOUD_HELP, show_default=False),
    batch: int = _batch_option(),
    attempts: int = typer.Option(5, "--attempts", min=1, help="Tries per upload request on network errors."),
    retry_delay: float = typer.Option(0.5, "--retry-delay", min=0.0, help="First backoff delay, seconds (doubles "
                                      "at each retry, with jitter)."),
    timeout: float = typer.Option(30.0, "--timeout", min=0.1, help="HTTP timeout, seconds."),
    state: Path | None = state_option(),
    platform: Path | None = platform_option(),
    json_: bool = _json_option(),
) -> None:
    """Sign readings in the enclave and upload them; print the cloud's verdict for each.

    Each FILE, or each non-empty line of stdin with --stdin, is one reading
    payload (at most 65536 bytes; longer lines are skipped with a warning and
    exit code 2). Readings are stored in the outbox (with their sequence
    numbers) before anything is signed or sent, and leave it only when the cloud
    acknowledges them; readings an earlier run left there are sent too. With
    neither FILE nor --stdin, only what waits in the outbox is sent. Exit 0
    when every reading was acknowledged, 1 if the cloud refused any (they move
    to the dead-letter list, see `gateway status`), 2 if some could not be
    delivered (cloud unreachable: they stay in the outbox).

    Examples:

      sgx-iot gateway send Sensor_Data

      sensor-reader | sgx-iot gateway send --stdin --batch 500

      sgx-iot gateway send        # deliver what the outbox still holds
    """
    if stdin and files:
        raise UsageError("give the files to send or --stdin, not both")
    payloads = _read_payloads(files) if files else []
    gateway = GatewayState(state)
    retry = RetryPolicy(attempts=attempts, base_delay=retry_delay)
    skipped = 0
    with _delivery(gateway, cloud, batch, platform, retry, timeout) as (delivery, _):
        if stdin:
            chunk: list[bytes] = []
            for number, raw in enumerate(sys.stdin.buffer, 1):
                line = raw[:-1] if raw.endswith(b"\n") else raw
                if len(line) > MAX_PAYLOAD:
                    _warn(f"[yellow]skipped:[/] line {number} of stdin is longer than {MAX_PAYLOAD} bytes, the most "
                          "one reading may carry")
                    skipped += 1
                elif line:
                    chunk.append(line)
                if len(chunk) >= batch:
                    delivery.accept(chunk)
                    chunk = []
            delivery.accept(chunk)
        else:
            delivery.accept(payloads)
        report = delivery.deliver()
    if json_:
        print_json({**report.to_dict(), "skipped": skipped})
    else:
        _print_report(report)
    _finish(report.error, report.pending, report.refused)
    if skipped:
        raise typer.Exit(EXIT_USAGE)


# --- run -------------------------------------------------------------------------------------------------------------

def run(
    input_: str = typer.Option("-", "--input", help="A file to follow as it grows, a FIFO, or - for stdin."),
    cloud: str | None = typer.Option(None, "--cloud", help=_CLOUD_HELP, show_default=False),
    batch: int = _batch_option(),
    flush_interval: float = typer.Option(1.0, "--flush-interval", min=0.0, help="Store, sign and upload buffered "
                                         "lines at least this often, seconds."),
    max_readings: int | None = typer.Option(None, "--max-readings", min=1, help="Stop after reading this many "
                                            "lines (and delivering them).", show_default=False),
    idle_exit: float | None = typer.Option(None, "--idle-exit", min=0.0, help="Exit after this many seconds "
                                           "without new input or upload progress.", show_default=False),
    retry_delay: float = typer.Option(1.0, "--retry-delay", min=0.0, help="First backoff delay when the cloud is "
                                      "unreachable, seconds (doubles, with jitter)."),
    retry_max_delay: float = typer.Option(60.0, "--retry-max-delay", min=0.0, help="Longest backoff delay, seconds."),
    timeout: float = typer.Option(30.0, "--timeout", min=0.1, help="HTTP timeout, seconds."),
    state: Path | None = state_option(),
    platform: Path | None = platform_option(),
    json_: bool = typer.Option(False, "--json", help="Print one JSON object per delivery round (JSON Lines)."),
) -> None:
    """Deliver readings continuously: one reading per line of a growing file, a FIFO or stdin.

    Lines are stored in the outbox every --batch lines or --flush-interval
    seconds, signed in the enclave (one ECALL per batch) and uploaded; while the
    cloud is unreachable they wait in the outbox and uploads are retried with
    exponential backoff and jitter. A followed file is read from its start the
    first time, and from after its last stored line on every restart (nothing
    twice, nothing skipped); a FIFO accepts writer after writer. At the end of
    stdin (or after --max-readings) it delivers what is left, then exits; while
    the cloud is unreachable it keeps retrying (bound it with --idle-exit).
    SIGTERM or Ctrl-C stores what was read and exits. Exit codes as for
    `gateway send`.

    Examples:

      sgx-iot gateway run --input /var/log/sensor.log

      mkfifo /tmp/readings && sgx-iot gateway run --input /tmp/readings --batch 50

      sgx-iot gateway run --input readings.txt --max-readings 1000 --idle-exit 10
    """
    options = RunOptions(flush_interval=flush_interval, max_readings=max_readings, idle_exit=idle_exit,
                         backoff=RetryPolicy(base_delay=retry_delay, max_delay=max(retry_delay, retry_max_delay)))
    gateway = GatewayState(state)
    stop = threading.Event()
    with _delivery(gateway, cloud, batch, platform, RetryPolicy(attempts=1), timeout) as (delivery, stack):
        source = stack.enter_context(open_source(input_, resume=delivery.outbox.input_offset))
        with _stop_on_signals(stop):
            if not json_:
                _warn(f"gateway {delivery.gateway}: reading {source.name}, delivering to {delivery.client.url} "
                      f"(outbox: {delivery.outbox.depth()} waiting)")
            summary = run_delivery(delivery, source, options, emit=_emitter(json_), stop=stop)
    if json_:
        sys.stdout.write(json.dumps({"summary": summary.to_dict()}) + "\n")
    else:
        _say(f"read {summary.read} line(s) ({summary.skipped} skipped); {summary.stored} stored, "
                      f"{summary.duplicates} duplicate, {summary.refused} refused; {summary.pending} waiting in the "
                      "outbox")  # fmt: skip
    _finish(summary.last_error, summary.pending, summary.refused)


def _emitter(json_: bool) -> Any:
    def emit(report: DeliveryReport) -> None:
        if json_:
            sys.stdout.write(json.dumps(report.to_dict()) + "\n")
            sys.stdout.flush()
            return
        if report.verdicts:
            _say(f"delivered: {report.stored} stored, {report.duplicates} duplicate, {report.refused} "
                          f"refused; {report.pending} waiting")  # fmt: skip
        for v in report.verdicts:
            if v.status == "refused":
                _say(f"  seq {v.seq} refused: {v.code}: {v.message}")
        if report.error:
            _warn(f"[yellow]not delivered:[/] {report.error}")

    return emit


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """While inside: SIGTERM and SIGINT set ``stop`` (the loop then stores what it read and exits)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# --- status ----------------------------------------------------------------------------------------------------------

def status(state: Path | None = state_option(), json_: bool = _json_option()) -> None:
    """Show the gateway's key, registration, outbox depth, dead letters, last upload and last error.

    Reads the state folder only (no enclave launch, no network).

    Examples:

      sgx-iot gateway status

      sgx-iot gateway status --json | jq .outbox.pending
    """
    info = gateway_status(GatewayState(state))
    if json_:
        print_json(info.to_dict())
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("state", info.folder)
    if not info.provisioned:
        table.add_row("key", "[yellow]not provisioned[/] (run `sgx-iot gateway init`)")
    else:
        table.add_row("key SHA-256", info.key_sha256 or f"[red]{info.key_error}[/]")
    if info.enclave:
        table.add_row("MRENCLAVE", str(info.enclave.get("mrenclave")))
    reg = info.registration
    if reg is None:
        table.add_row("registration", "[yellow]not registered[/] (run `sgx-iot gateway register`)")
    else:
        table.add_row("registration", f"{reg.name} at {reg.cloud} since {_when(reg.registered_at)}")
        table.add_row("EAR expires", _when(reg.ear_expires_at))
        if info.key_matches_registration is False:
            table.add_row("", "[bold red]the current key is not the registered one: register again[/]")
    box = info.outbox
    if box is None:
        table.add_row("outbox", "empty (nothing sent yet)")
    else:
        table.add_row("outbox", f"{box.pending} waiting ({box.unsigned} not signed yet), next seq {box.next_seq}")
        if info.to_resign:
            table.add_row("", f"{info.to_resign} signed by an earlier key (signed again after `gateway register`)")
        table.add_row("delivered", str(box.delivered_total))
        table.add_row("dead letters", str(box.dead_letters))
        table.add_row("last upload", _when(box.last_upload_at))
        table.add_row("last error", f"{box.last_error} ({_when(box.last_error_at)})" if box.last_error else "none")
    console.print(table, highlight=False)
    for d in info.dead_letters:
        _say(f"  dead letter seq {d.reading.seq}: {d.code}: {d.message}")


for _name, _command in (("register", register), ("send", send), ("run", run), ("status", status)):
    app.command(_name)(handle_errors(_command))
