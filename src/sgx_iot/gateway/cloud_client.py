"""The gateway's HTTP client for the cloud API (``docs/api.md``): challenges, registration, batches of readings.

* Network errors, timeouts, ``429`` and ``5xx`` answers are retried with exponential backoff and jitter
  (:class:`RetryPolicy`, bounded in attempts); when they persist the call raises :class:`CloudUnavailable`.
  Uploading readings is idempotent on the cloud's side, so those requests are retried whatever happened; a
  registration consumes its nonce, so it is retried only when the connection could not even be made.
* A refusal (``4xx`` with ``{"error": {"code", "message"}}``) raises :class:`CloudRefusal`, a
  :class:`~sgx_iot.errors.VerificationError` carrying the cloud's code and sentence (and the HTTP status).
* Answers are checked before use: a malformed one raises :class:`~sgx_iot.errors.FormatError`.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

from sgx_iot import __version__
from sgx_iot.errors import CodedError, FormatError, UsageError, VerificationError
from sgx_iot.verify.evidence import Evidence
from sgx_iot.verify.readings import MAX_SEQ, SignedReading

DEFAULT_TIMEOUT = 30.0
_MAX_ERROR_TEXT = 300
_STRUCTURE = "cloud response"


class CloudUnavailable(CodedError):
    """The cloud could not be reached, or kept answering with server errors, after every retry.

    ``code`` is ``CLOUD_UNREACHABLE`` (no HTTP answer) or ``CLOUD_ERROR`` (429/5xx answers or an unreadable
    answer).
    """


class CloudRefusal(VerificationError):
    """The cloud refused the request (4xx): its stable code and sentence, and the HTTP status."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(code, message)
        self.status = status


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: before retry *n* (1-based) wait ``min(max_delay, base_delay ×
    multiplier^(n-1))``, reduced by a random fraction of at most ``jitter``; at most ``attempts`` tries."""

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < 0 or self.multiplier < 1:
            raise UsageError("retry policy: attempts ≥ 1, delays ≥ 0 and multiplier ≥ 1 are required")
        if not 0 <= self.jitter <= 1:
            raise UsageError("retry policy: jitter must be between 0 and 1")

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        ceiling = min(self.max_delay, self.base_delay * self.multiplier ** max(0, retry - 1))
        return ceiling * (1.0 - self.jitter * (rng or _RNG).random())


_RNG = random.Random()
NO_RETRY = RetryPolicy(attempts=1)


@dataclass(frozen=True)
class Challenge:
    """A nonce from ``POST /v1/challenges`` and when it expires (Unix seconds)."""

    nonce: bytes
    expires_at: int
    policy_id: str


@dataclass(frozen=True)
class RegisterAnswer:
    """The cloud's answer to a successful registration."""

    name: str
    key_sha256: str
    ear: str
    created: bool
    key_changed: bool
    policy_id: str
    tcb_status: str
    gateway: dict[str, Any] = field(repr=False)
    next_seq: int = 0
    """Where the gateway's numbering must continue: one more than the highest sequence number the cloud stored."""


@dataclass(frozen=True)
class Verdict:
    """The cloud's verdict on one uploaded reading: ``stored``, ``duplicate`` or ``refused`` (with a code)."""

    gateway: str
    seq: int
    status: str
    code: str | None
    message: str

    @property
    def acknowledged(self) -> bool:
        """True when the cloud holds the reading (stored now or before): it may leave the outbox."""
        return self.status in ("stored", "duplicate")

    def to_dict(self) -> dict[str, Any]:
        return {"gateway": self.gateway, "seq": self.seq, "status": self.status, "code": self.code,
                "message": self.message}  # fmt: skip


def normalise_url(url: str) -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing slash; ``UsageError`` for anything else."""
    text = url.strip().rstrip("/")
    try:
        parsed = httpx.URL(text)
    except (httpx.InvalidURL, TypeError):
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise UsageError(f"{url!r} is not a cloud URL; give one like http://127.0.0.1:8000")
    if parsed.query or parsed.fragment:
        raise UsageError(f"the cloud URL {url!r} must not have a query or fragment")
    return text


class CloudClient:
    """A connection to one cloud service. Use as a context manager, or call :meth:`close`.

    ``sleep`` and ``rng`` are the waiting function and the jitter source (tests pass their own).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.url = normalise_url(url)
        self.retry = retry
        self._sleep = sleep
        self._rng = rng
        self._http = httpx.Client(base_url=self.url, timeout=timeout, follow_redirects=False,
                                  headers={"user-agent": f"sgx-iot-gateway/{__version__}"})  # fmt: skip

    def __enter__(self) -> CloudClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- API calls -----------------------------------------------------------------------------------------

    def challenge(self) -> Challenge:
        """``POST /v1/challenges``: a fresh single-use nonce."""
        doc = self._request("POST", "/v1/challenges", idempotent=True)
        nonce_hex = _field(doc, "nonce", str)
        try:
            nonce = bytes.fromhex(nonce_hex)
        except ValueError:
            raise FormatError(_STRUCTURE, "nonce", None, "is not hexadecimal") from None
        if not 16 <= len(nonce) <= 64:
            raise FormatError(_STRUCTURE, "nonce", None, f"must be 16 to 64 bytes, not {len(nonce)}")
        return Challenge(nonce, _field(doc, "expires_at", int), _field(doc, "policy_id", str))

    def register(self, name: str, evidence: Evidence) -> RegisterAnswer:
        """``POST /v1/gateways``: appraise ``evidence`` and register its key as gateway ``name``.

        Raises :class:`CloudRefusal` with the appraisal's code when the cloud refuses it.
        """
        doc = self._request("POST", "/v1/gateways", {"name": name, "evidence": evidence.to_dict()}, idempotent=False)
        gateway = _field(doc, "gateway", dict)
        return RegisterAnswer(
            name=_field(gateway, "name", str), key_sha256=_field(gateway, "key_sha256", str),
            ear=_field(doc, "ear", str), created=_field(doc, "created", bool),
            key_changed=_field(doc, "key_changed", bool), policy_id=_field(gateway, "policy_id", str),
            tcb_status=_field(gateway, "tcb_status", str), gateway=gateway, next_seq=_next_seq(gateway),
        )  # fmt: skip

    def next_seq(self, name: str) -> int:
        """``GET /v1/gateways/{name}``: one more than the highest sequence number the cloud stored for gateway
        ``name`` (0 when it stored none). ``CloudRefusal`` 404 when no such gateway is registered."""
        return _next_seq(self._request("GET", f"/v1/gateways/{name}", idempotent=True))

    def upload(self, readings: Sequence[SignedReading]) -> list[Verdict]:
        """``POST /v1/readings``: one verdict per reading, in order (checked against what was sent)."""
        if not readings:
            return []
        doc = self._request("POST", "/v1/readings", {"readings": [r.to_dict() for r in readings]}, idempotent=True)
        return parse_verdicts(doc, readings)

    def health(self) -> dict[str, Any]:
        """``GET /healthz``."""
        return self._request("GET", "/healthz", idempotent=True)

    # --- transport -----------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None, *, idempotent: bool) -> dict[str, Any]:
        content = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {"content-type": "application/json"} if content is not None else {}
        last_problem = ""
        for attempt in range(1, self.retry.attempts + 1):
            if attempt > 1:
                self._sleep(self.retry.delay(attempt - 1, self._rng))
            try:
                response = self._http.request(method, path, content=content, headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last_problem, code = f"cannot connect to {self.url}: {_describe(exc)}", "CLOUD_UNREACHABLE"
                continue
            except httpx.TransportError as exc:
                last_problem, code = f"no answer from {self.url}: {_describe(exc)}", "CLOUD_UNREACHABLE"
                if not idempotent:
                    break
                continue
            except httpx.HTTPError as exc:  # an answer that cannot be read (bad content encoding, …)
                last_problem, code = f"an unreadable answer from {self.url}: {type(exc).__name__}", "CLOUD_ERROR"
                break
            if response.status_code == 429 or response.status_code >= 500:
                last_problem = f"{self.url} answered {response.status_code}: {_error_text(response)}"
                code = "CLOUD_ERROR"
                if not idempotent and response.status_code not in (429, 503):
                    break
                continue
            return _decode(response, self.url)
        tries = f" (after {attempt} attempt{'s' if attempt > 1 else ''})"
        raise CloudUnavailable(code, last_problem + tries)


def parse_verdicts(doc: Any, sent: Sequence[SignedReading]) -> list[Verdict]:
    """The verdicts of a ``POST /v1/readings`` answer, checked against the readings ``sent`` (same count, same
    gateway and sequence number at each index, known status, a code on every refusal); ``FormatError`` otherwise."""
    if not isinstance(doc, dict):
        raise FormatError(_STRUCTURE, "(document)", None, "must be a JSON object")
    items = _field(doc, "verdicts", list)
    if len(items) != len(sent):
        raise FormatError(_STRUCTURE, "verdicts", None, f"{len(items)} verdicts for {len(sent)} readings")
    verdicts = []
    for i, (item, reading) in enumerate(zip(items, sent, strict=True)):
        if not isinstance(item, dict):
            raise FormatError(_STRUCTURE, f"verdicts[{i}]", None, "must be an object")
        code = item.get("code")
        verdict = Verdict(
            gateway=_field(item, "gateway", str), seq=_field(item, "seq", int), status=_field(item, "status", str),
            code=code if isinstance(code, str) else None, message=_field(item, "message", str),
        )  # fmt: skip
        if (verdict.gateway, verdict.seq) != (reading.reading.gateway, reading.reading.seq):
            raise FormatError(_STRUCTURE, f"verdicts[{i}]", None, "does not answer the reading sent at that index")
        if verdict.status not in ("stored", "duplicate", "refused"):
            raise FormatError(_STRUCTURE, f"verdicts[{i}].status", None, f"unknown status {verdict.status!r}")
        if verdict.status == "refused" and not verdict.code:
            raise FormatError(_STRUCTURE, f"verdicts[{i}].code", None, "a refusal must carry a code")
        verdicts.append(verdict)
    return verdicts


def _decode(response: httpx.Response, url: str) -> dict[str, Any]:
    status = response.status_code
    try:
        doc = response.json()
    except (ValueError, UnicodeDecodeError):
        doc = None
    if 200 <= status < 300:
        if not isinstance(doc, dict):
            raise FormatError(_STRUCTURE, "(document)", None, f"{url} answered {status} without a JSON object")
        return doc
    error = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str) and isinstance(error.get("message"), str):
        raise CloudRefusal(error["code"], error["message"][:1000], status)
    raise UsageError(f"{url} answered {status} without an sgx-iot error body; is it an sgx-iot cloud? "
                     f"({_error_text(response)})")


def _error_text(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
        return f"{error['code']}: {error['message']}"[:_MAX_ERROR_TEXT]
    except Exception:  # noqa: BLE001 - any unreadable body is shown as (part of) its text
        return (response.text or response.reason_phrase)[:_MAX_ERROR_TEXT].strip()


def _describe(exc: httpx.TransportError) -> str:
    return str(exc) or type(exc).__name__


def _next_seq(gateway: dict[str, Any]) -> int:
    """The ``next_seq`` of a gateway document (0 from a cloud too old to send it)."""
    value = gateway.get("next_seq", 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ + 1:
        raise FormatError("cloud response", "next_seq", None, "is not a sequence number")
    return value


def _field(doc: dict[str, Any], name: str, kind: type) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise FormatError(_STRUCTURE, name, None, f"missing or not a {kind.__name__}")
    return value
