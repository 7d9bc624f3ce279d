"""A PCCS-compatible collateral service for the simulated platform (Intel PCS/PCCS API v4, SGX_FORMATS.md §8.3).

Paths (under ``/sgx/certification/v4``), as ``dcap_qvl.get_collateral(url, quote)`` requests them:

* ``GET /tcb?fmspc=<hex>`` → ``{"tcbInfo":…,"signature":…}``, header ``TCB-Info-Issuer-Chain``;
* ``GET /qe/identity[?update=standard|early]`` → ``{"enclaveIdentity":…,"signature":…}``, header
  ``SGX-Enclave-Identity-Issuer-Chain``;
* ``GET /pckcrl?ca=processor[&encoding=der|pem]`` → the PCK CRL (DER, or PEM by default as Intel's PCS v4),
  header ``SGX-PCK-CRL-Issuer-Chain``; ``ca=platform`` is 404 (the simulation has no Platform CA);
* ``GET /rootcacrl`` → the root CA CRL as hex text (what a PCCS returns and dcap-qvl expects).

Issuer-chain headers carry URL-encoded PEM, like Intel's. Collateral is issued fresh for every request from the
platform's current configuration, so ``sgx-iot sim set-tcb`` and ``revoke-pck`` take effect immediately. The service
binds to loopback addresses only: it is a test fixture, not a production PCCS.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI, Query, Response

from sgx_iot.errors import PlatformError, UsageError
from sgx_iot.platform.sim import collateral
from sgx_iot.platform.sim.pki import fingerprint
from sgx_iot.platform.sim.store import PlatformStore

PREFIX = "/sgx/certification/v4"


def _chain_header(pem: str) -> str:
    return urllib.parse.quote(pem, safe="")


def _not_found(message: str) -> Response:
    return Response(content=f'{{"error":"{message}"}}', status_code=404, media_type="application/json")


def create_app(folder: str | os.PathLike[str]) -> FastAPI:
    """The FastAPI application serving the collateral of the simulated platform in ``folder``."""
    path = Path(folder)
    # Fail now, not at the first request, if there is no platform. Collateral needs no platform secret.
    PlatformStore.open(path, create=False, secrets=False)
    app = FastAPI(
        title="sgx-iot simulated PCCS",
        description="Collateral of a SIMULATED SGX platform (sgx-iot). Its root CA is not Intel's.",
        version="4",
    )

    def load() -> PlatformStore:
        return PlatformStore.open(path, create=False, secrets=False)

    @app.get("/", include_in_schema=False)
    def about() -> dict[str, str]:
        store = load()
        return {
            "service": "sgx-iot simulated PCCS (SIMULATED, not Intel)",
            "api": PREFIX,
            "fmspc": store.config.pck.fmspc.hex().upper(),
            "root_ca_sha256": fingerprint(store.pki.root_cert),
        }

    @app.get(f"{PREFIX}/tcb")
    def tcb(fmspc: str = Query(..., pattern="^[0-9A-Fa-f]{12}$")) -> Response:
        store = load()
        if bytes.fromhex(fmspc) != store.config.pck.fmspc:
            return _not_found(f"no TCB info for FMSPC {fmspc.upper()}")
        doc = collateral.tcb_info(store, collateral.Validity.starting(store))
        return Response(
            content=doc.envelope("tcbInfo"),
            media_type="application/json",
            headers={"TCB-Info-Issuer-Chain": _chain_header(store.pki.tcb_issuer_chain_pem())},
        )

    @app.get(f"{PREFIX}/qe/identity")
    def qe_identity(update: str = Query("standard", pattern="^(standard|early)$")) -> Response:
        store = load()
        doc = collateral.qe_identity(store, collateral.Validity.starting(store))
        return Response(
            content=doc.envelope("enclaveIdentity"),
            media_type="application/json",
            headers={"SGX-Enclave-Identity-Issuer-Chain": _chain_header(store.pki.tcb_issuer_chain_pem())},
        )

    @app.get(f"{PREFIX}/pckcrl")
    def pck_crl(
        ca: str = Query(..., pattern="^(processor|platform)$"),
        encoding: str = Query("pem", pattern="^(pem|der)$"),
    ) -> Response:
        if ca != "processor":
            return _not_found("the simulated platform has a Processor CA only")
        store = load()
        der = collateral.pck_crl(store, collateral.Validity.starting(store))
        headers = {"SGX-PCK-CRL-Issuer-Chain": _chain_header(store.pki.pck_crl_issuer_chain_pem())}
        if encoding == "der":
            return Response(content=der, media_type="application/pkix-crl", headers=headers)
        pem = x509.load_der_x509_crl(der).public_bytes(serialization.Encoding.PEM)
        return Response(content=pem, media_type="application/x-pem-file", headers=headers)

    @app.get(f"{PREFIX}/rootcacrl")
    def root_ca_crl() -> Response:
        store = load()
        der = collateral.root_ca_crl(store, collateral.Validity.starting(store))
        return Response(content=der.hex(), media_type="text/plain")

    return app


def check_loopback(host: str) -> None:
    """``UsageError`` unless ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise UsageError(
            f"the simulated PCCS serves loopback only; {host!r} is not a loopback address (use 127.0.0.1 or ::1)"
        )


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on loopback ``host``:``port`` (``UsageError`` if not loopback or in use)."""
    check_loopback(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host} port {port}: {exc.strerror}; choose another --port") from None
    return sock


def serve(folder: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 8081) -> None:
    """Serve the collateral of the platform in ``folder`` until interrupted (blocking)."""
    app = create_app(folder)
    sock = _bind(host, port)
    try:
        uvicorn.Server(uvicorn.Config(app, log_level="info", lifespan="off")).run(sockets=[sock])
    finally:
        sock.close()


@contextlib.contextmanager
def running(folder: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run the service in a background thread (``port`` 0: a free port); yields its base URL, stops on exit."""
    app = create_app(folder)
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="sim-pccs")
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise PlatformError("PCCS_START_FAILED", f"the simulated PCCS did not start on {host}:{bound_port}")
        time.sleep(0.01)
    try:
        shown = f"[{host}]" if ":" in host else host
        yield f"http://{shown}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
