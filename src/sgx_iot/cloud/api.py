"""The HTTP API of the cloud service (FastAPI). Endpoints, encodings and error codes: ``docs/api.md``.

``create_app(settings)`` builds the application: it opens the database, runs the migrations, loads the policy
and the verifier's EAR key, and wires :class:`sgx_iot.cloud.service.CloudService` to the routes. Every error is
a JSON body ``{"error": {"code": "UPPER_SNAKE", "message": "a sentence"}}``: 4xx for anything a client can cause
(malformed JSON, wrong types, oversized bodies, unknown routes, refused evidence), 503 when the database is
unreachable, and a logged 500 only for a bug.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import time
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sgx_iot import __version__
from sgx_iot.cloud import db
from sgx_iot.cloud.service import CloudService, NotFoundError, Verdict
from sgx_iot.cloud.settings import Settings
from sgx_iot.errors import FormatError, SgxIotError, UsageError, VerificationError
from sgx_iot.verify.collateral import CollateralSource
from sgx_iot.verify.ear import jwk_thumbprint, public_jwk
from sgx_iot.verify.evidence import MAX_EVIDENCE_BYTES, Evidence
from sgx_iot.verify.readings import MAX_PAYLOAD, MAX_SEQ, MAX_SIGNATURE, SignedReading

log = logging.getLogger("sgx_iot.cloud")
NAME_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"


# --- API models -----------------------------------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ErrorBody(BaseModel):
    code: str = Field(description="stable UPPER_SNAKE code", examples=["KEY_BINDING_MISMATCH"])
    message: str = Field(description="a sentence for people")


class ErrorOut(BaseModel):
    error: ErrorBody


class ChallengeOut(BaseModel):
    nonce: str = Field(description="hex; bind it into REPORTDATA = SHA-256(SPKI DER ‖ nonce) ‖ 0³²")
    expires_at: int = Field(description="Unix seconds")
    expires_in: int
    policy_id: str


class RegisterIn(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="gateway name")
    evidence: dict[str, Any] = Field(description="sgx-iot-evidence/1 document (see sgx_iot.verify.evidence)")


class GatewayOut(BaseModel):
    name: str
    status: Literal["active", "revoked"]
    public_key: str = Field(description="PEM SubjectPublicKeyInfo of the current attested key")
    key_sha256: str
    platform: str
    enclave: dict[str, Any]
    tcb_status: str
    advisory_ids: list[str]
    policy_id: str
    created_at: int
    updated_at: int
    revoked_at: int | None
    revoked_reason: str | None
    platform_id: str | None = Field(description="hex PPID of the platform the name is bound to")
    next_seq: int = Field(ge=0, description="one more than the highest sequence number stored for this gateway (0 "
                          "before its first reading): a gateway that lost its outbox continues from here")


class RegisterOut(BaseModel):
    gateway: GatewayOut
    ear: str = Field(description="EAR attestation result token (JWT, ES256, verifier key at GET /v1/verifier)")
    created: bool
    key_changed: bool
    appraisal: dict[str, Any]


class RevokeIn(_Strict):
    reason: str = Field("", max_length=500)


class ReadingIn(_Strict):
    gateway: str = Field(pattern=NAME_PATTERN)
    seq: int = Field(ge=0, le=MAX_SEQ)
    timestamp: int = Field(ge=-(2**63), le=2**63 - 1, description="Unix seconds")
    payload: str = Field(max_length=4 * ((MAX_PAYLOAD + 2) // 3), description="base64")
    signature: str = Field(max_length=4 * ((MAX_SIGNATURE + 2) // 3), description="base64 DER ECDSA signature")


class ReadingsIn(_Strict):
    readings: list[ReadingIn]


class VerdictOut(BaseModel):
    index: int
    gateway: str
    seq: int
    status: Literal["stored", "duplicate", "refused"]
    code: str | None
    message: str


class ReadingsOut(BaseModel):
    verdicts: list[VerdictOut]
    stored: int
    duplicates: int
    refused: int


class StoredReadingOut(BaseModel):
    gateway: str
    seq: int
    timestamp: int
    payload: str
    signature: str
    key_sha256: str
    received_at: int


class ReadingsPage(BaseModel):
    readings: list[StoredReadingOut]
    next: str | None = Field(description="cursor for the next page (pass it as ?after=), null on the last page")


class VerifierOut(BaseModel):
    jwk: dict[str, str]
    kid: str
    public_key: str
    verifier_id: dict[str, str]
    policy_id: str


class HealthOut(BaseModel):
    status: str
    database: str
    policy_id: str
    version: str


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with its nested models inlined (no ``$defs``), for ``openapi_extra``."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)


_READINGS_IN_SCHEMA = _inline_schema(ReadingsIn)


def _is_json(content_type: str | None) -> bool:
    """True when a request with this Content-Type is read as JSON (absent counts as JSON, as FastAPI does)."""
    if not content_type:
        return True
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


def _parse_readings(body: bytes, content_type: str | None, max_batch: int) -> list[SignedReading]:
    """The batch of ``POST /v1/readings`` (shape: :class:`ReadingsIn`), validated as strictly as that model.

    Raises only client errors: ``_MalformedJson`` (400 MALFORMED_JSON) for a body that is not
    JSON, ``FormatError`` (422 INVALID_REQUEST, naming ``readings[i].field``) for anything else.
    """
    if not _is_json(content_type):
        raise FormatError("readings", "(body)", None, "must be a JSON document (Content-Type: application/json)")
    if not body:
        raise FormatError("readings", "(body)", None, 'is empty; expected {"readings": [...]}')
    try:
        doc = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _MalformedJson() from None
    if not isinstance(doc, dict) or doc.keys() != {"readings"}:
        raise FormatError("readings", "(body)", None, 'must be an object with exactly one field, "readings"')
    items = doc["readings"]
    if not isinstance(items, list):
        raise FormatError("readings", "readings", None, "must be a list of signed readings")
    if not items:
        raise FormatError("readings", "readings", None, "the batch is empty")
    if len(items) > max_batch:
        raise FormatError("readings", "readings", None, f"at most {max_batch} readings per batch")
    batch = []
    for i, item in enumerate(items):
        try:
            batch.append(SignedReading.from_dict(item))
        except FormatError as exc:
            raise FormatError("readings", f"readings[{i}].{exc.field}", None, exc.reason) from None
    return batch


class _MalformedJson(Exception):
    """The request body is not JSON (400 MALFORMED_JSON)."""


# --- errors ---------------------------------------------------------------------------------------------------

def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error shape of the API."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


_ERRORS = {400: {"model": ErrorOut}, 403: {"model": ErrorOut}, 404: {"model": ErrorOut}, 413: {"model": ErrorOut},
           422: {"model": ErrorOut}}
_STATUS_CODES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
                 405: "METHOD_NOT_ALLOWED", 406: "NOT_ACCEPTABLE", 413: "REQUEST_TOO_LARGE",
                 415: "UNSUPPORTED_MEDIA_TYPE"}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
        if first.get("type") == "json_invalid":
            return error_response(400, "MALFORMED_JSON", "the request body is not valid JSON")
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        return error_response(422, "INVALID_REQUEST", f"{where}: {first.get('msg', 'invalid')}{more}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":  # FastAPI's words
            return error_response(400, "MALFORMED_JSON", "the request body is not valid JSON")
        code = _STATUS_CODES.get(exc.status_code, f"HTTP_{exc.status_code}")
        message = exc.detail if isinstance(exc.detail, str) else code
        return error_response(exc.status_code, code, message, getattr(exc, "headers", None))

    @app.exception_handler(_MalformedJson)
    async def _malformed(_: Request, exc: _MalformedJson) -> JSONResponse:
        return error_response(400, "MALFORMED_JSON", "the request body is not valid JSON")

    @app.exception_handler(VerificationError)
    async def _verification(_: Request, exc: VerificationError) -> JSONResponse:
        return error_response(403, exc.code, exc.message)

    @app.exception_handler(NotFoundError)
    async def _not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return error_response(404, exc.code, exc.message)

    @app.exception_handler(FormatError)
    async def _format(_: Request, exc: FormatError) -> JSONResponse:
        return error_response(422, "INVALID_REQUEST", str(exc))

    @app.exception_handler(UsageError)
    async def _usage(_: Request, exc: UsageError) -> JSONResponse:
        return error_response(400, "BAD_REQUEST", str(exc))

    @app.exception_handler(SgxIotError)
    async def _other(_: Request, exc: SgxIotError) -> JSONResponse:
        return error_response(422, getattr(exc, "code", "REFUSED"), str(exc))

    @app.exception_handler(OperationalError)
    async def _database(request: Request, exc: OperationalError) -> JSONResponse:
        log.error("database unavailable on %s %s: %s", request.method, request.url.path, type(exc.orig).__name__)
        return error_response(503, "DATABASE_UNAVAILABLE", "the database is unavailable; retry later")


class _Guard:
    """Outermost ASGI layer: bounds the request body and turns any unhandled exception into a JSON error.

    The body is read (at most ``max_body`` bytes) before the application sees it, so an oversized request is
    refused with 413 REQUEST_TOO_LARGE without being parsed. A crash is logged with its type and stack frames but
    not its message or local values (which could hold evidence, tokens or payloads).
    """

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, "REQUEST_TOO_LARGE", f"the request body exceeds {self.max_body} bytes")
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await error_response(400, "BAD_REQUEST", "invalid Content-Length")(scope, receive, send)
                    return
                if declared > self.max_body:
                    await self._too_large(scope, receive, send)
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, replay, watch)
        except Exception as exc:  # the last line of defence: never a traceback to the client
            frames = "".join(traceback.format_tb(exc.__traceback__))
            log.error("unhandled %s on %s %s\n%s", type(exc).__name__, scope.get("method"), scope.get("path"), frames)
            if not started:
                await error_response(500, "INTERNAL_ERROR", "an unexpected error happened; it was logged")(
                    scope, replay, send)


# --- application ----------------------------------------------------------------------------------------------

def _gateway_out(info: Any) -> dict[str, Any]:
    return {
        "name": info.name, "status": info.status, "public_key": info.public_key_pem, "key_sha256": info.key_sha256,
        "platform": info.platform, "enclave": info.enclave, "tcb_status": info.tcb_status,
        "advisory_ids": info.advisory_ids, "policy_id": info.policy_id, "created_at": info.created_at,
        "updated_at": info.updated_at, "revoked_at": info.revoked_at, "revoked_reason": info.revoked_reason,
        "platform_id": info.platform_id, "next_seq": info.next_seq,
    }


def _verdict_out(v: Verdict) -> dict[str, Any]:
    return {"index": v.index, "gateway": v.gateway, "seq": v.seq, "status": v.status, "code": v.code,
            "message": v.message}


def _remote(request: Request) -> str | None:
    return request.client.host if request.client else None


def create_app(
    settings: Settings,
    *,
    run_migrations: bool = True,
    clock: Callable[[], float] | None = None,
    collateral: CollateralSource | None = None,
) -> FastAPI:
    """The FastAPI application for ``settings`` (see the module docstring).

    ``clock`` and ``collateral`` override the wall clock and the configured collateral source (tests).
    """
    engine = db.make_engine(settings.db_url, schema=settings.db_schema)
    if run_migrations:
        db.migrate(engine)
    verifier_key = settings.verifier_key()
    service = CloudService(
        db.session_factory(engine), settings.policy, verifier_key,
        collateral=collateral if collateral is not None else settings.collateral_source(),
        clock=clock or time.time, ear_lifetime=settings.ear_lifetime,
    )
    admin_token = settings.admin_token

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(
        title="sgx-iot cloud",
        version=__version__,
        description="Registers gateways whose keys are proven by SGX DCAP attestation, and accepts only sensor "
                    "readings signed by those keys. Errors: {\"error\": {\"code\", \"message\"}}.",
        lifespan=lifespan,
        responses=_ERRORS,
    )
    app.state.service = service
    app.state.engine = engine
    app.state.settings = settings
    _install_error_handlers(app)
    app.add_middleware(_Guard, max_body=settings.max_body_bytes)

    @app.get("/healthz", response_model=HealthOut, tags=["service"])
    def healthz() -> dict[str, Any]:
        """Liveness and database reachability."""
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return {"status": "ok", "database": "ok", "policy_id": settings.policy.id, "version": __version__}

    @app.get("/v1/verifier", response_model=VerifierOut, tags=["service"])
    def verifier() -> dict[str, Any]:
        """The verifier's public key (to check EAR tokens offline) and the policy in force."""
        from cryptography.hazmat.primitives import serialization

        pub = verifier_key.public_key()
        pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        return {"jwk": public_jwk(pub), "kid": jwk_thumbprint(pub), "public_key": pem.decode(),
                "verifier_id": service.verifier_id, "policy_id": settings.policy.id}

    @app.post("/v1/challenges", response_model=ChallengeOut, status_code=201, tags=["attestation"])
    def challenge() -> dict[str, Any]:
        """A single-use nonce for the next attestation, valid for the policy's nonce lifetime."""
        c = service.issue_challenge()
        return {"nonce": c.nonce.hex(), "expires_at": c.expires_at, "expires_in": c.expires_at - c.created_at,
                "policy_id": settings.policy.id}

    @app.post("/v1/gateways", response_model=RegisterOut, status_code=201, tags=["attestation"])
    def register(body: RegisterIn, request: Request) -> dict[str, Any]:
        """Appraise the evidence; on success register (or re-key) the gateway and return its EAR token.

        Refused evidence gives 403 with the appraisal's code (KEY_BINDING_MISMATCH, NONCE_UNKNOWN, …); only an
        audit-log row is stored then.
        """
        if len(json.dumps(body.evidence)) > MAX_EVIDENCE_BYTES:
            raise FormatError("evidence", "(document)", None, f"larger than {MAX_EVIDENCE_BYTES} bytes")
        evidence = Evidence.from_dict(body.evidence)
        reg = service.register(body.name, evidence, remote=_remote(request))
        return {"gateway": _gateway_out(reg.gateway), "ear": reg.ear, "created": reg.created,
                "key_changed": reg.key_changed, "appraisal": reg.appraisal.to_dict()}

    @app.get("/v1/gateways", response_model=list[GatewayOut], tags=["registry"])
    def gateways() -> list[dict[str, Any]]:
        """Every registered gateway."""
        return [_gateway_out(g) for g in service.list_gateways()]

    @app.get("/v1/gateways/{name}", response_model=GatewayOut, tags=["registry"])
    def gateway(name: str) -> dict[str, Any]:
        """One gateway (404 GATEWAY_NOT_FOUND if unknown)."""
        return _gateway_out(service.get_gateway(name))

    @app.post("/v1/gateways/{name}/revoke", response_model=GatewayOut, tags=["registry"],
              responses={401: {"model": ErrorOut}})
    def revoke(name: str, request: Request, body: RevokeIn | None = None,
               authorization: str | None = Header(default=None)) -> Any:
        """Revoke a gateway (admin: ``Authorization: Bearer <token>``). Its readings are refused from then on."""
        if admin_token is None:
            return error_response(403, "ADMIN_DISABLED", "no admin token is configured on this service")
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), admin_token.encode()):
            service.audit("revoke", name[:64], "UNAUTHORIZED", "revocation attempted without a valid admin token",
                          _remote(request))
            return error_response(401, "UNAUTHORIZED", "a valid admin token is required (Authorization: Bearer …)",
                                  {"WWW-Authenticate": "Bearer"})
        return _gateway_out(service.revoke(name, body.reason if body else "", remote=_remote(request)))

    @app.post("/v1/readings", response_model=ReadingsOut, tags=["readings"],
              openapi_extra={"requestBody": {"required": True,
                                             "content": {"application/json": {"schema": _READINGS_IN_SCHEMA}}}})
    async def readings(request: Request) -> Any:
        """Verify and store a batch of signed readings; one verdict per reading (stored, duplicate, refused)."""
        # Runs on the event loop: ingest_async verifies the signatures on worker threads (ECDSA releases the
        # GIL) and stores on the store thread, so the loop parses and answers other batches meanwhile.
        # The body is parsed by hand (json.loads + SignedReading.from_dict, as strict as ReadingsIn, which
        # documents it): per-item pydantic models cost as much as a fifth of a signature verification.
        batch = _parse_readings(await request.body(), request.headers.get("content-type"), settings.max_batch)
        verdicts = await service.ingest_async(batch, remote=_remote(request))
        counts = {s: sum(1 for v in verdicts if v.status == s) for s in ("stored", "duplicate", "refused")}
        # Built here, not validated again against ReadingsOut (it documents this shape): the hot path.
        return JSONResponse({"verdicts": [_verdict_out(v) for v in verdicts], "stored": counts["stored"],
                             "duplicates": counts["duplicate"], "refused": counts["refused"]})

    @app.get("/v1/readings", response_model=ReadingsPage, tags=["readings"])
    def list_readings(
        gateway: str | None = Query(default=None, pattern=NAME_PATTERN),
        since: int | None = Query(default=None, ge=-(2**63), le=2**63 - 1, description="timestamp ≥ since"),
        limit: int = Query(default=100, ge=1, le=1000),
        after: str | None = Query(default=None, max_length=64, description="the 'next' cursor of the previous page"),
    ) -> dict[str, Any]:
        """Stored readings, oldest first; each with its signature and the fingerprint of the key that verified it.

        Page with ``after``: each page's ``next`` (null on the last page) given back as ``?after=`` with the same
        ``gateway`` and ``since`` continues exactly after the page's last reading.
        """
        rows = service.list_readings(gateway, since, limit, after)
        return {"readings": [
            {"gateway": r.gateway, "seq": r.seq, "timestamp": r.timestamp,
             "payload": base64.b64encode(r.payload).decode(), "signature": base64.b64encode(r.signature).decode(),
             "key_sha256": r.key_sha256, "received_at": r.received_at} for r in rows],
            "next": rows[-1].cursor if len(rows) == limit else None}

    return app
