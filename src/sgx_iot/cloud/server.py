"""Running the cloud service: ``serve`` (foreground, one or several uvicorn workers) and
``BackgroundServer`` (in a thread on a loopback port: tests, benchmarks, ``sgx-iot demo``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from sgx_iot.cloud import db
from sgx_iot.cloud.api import create_app
from sgx_iot.cloud.settings import Settings, from_environment
from sgx_iot.errors import UsageError


class NoDelayH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with TCP_NODELAY on each connection.

    uvicorn writes a response's head and body separately; without TCP_NODELAY, Nagle's algorithm holds the body
    until the client's delayed ACK (about 40 ms on Linux) — a floor under every request's latency.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover - not a TCP socket after all
                pass
        super().connection_made(transport)


def prepare(settings: Settings) -> None:
    """Create the data folder and the verifier key, and migrate the database (once, before any worker starts)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.verifier_key()
    engine = db.make_engine(settings.db_url, schema=settings.db_schema)
    try:
        db.migrate(engine)
    finally:
        engine.dispose()


LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
_ENV_LOG_LEVEL = "SGX_IOT_CLOUD_LOG_LEVEL"


def configure_logging(level: str) -> None:
    """Send the service's own log records (``sgx_iot.*``, and any library's) to stderr from ``level`` up.

    uvicorn's ``trace`` level is deliberately not offered: it logs whole request and response bodies (evidence,
    tokens, payloads). At ``debug`` nothing secret is logged either (tests/test_secrets_hygiene.py).
    """
    if level not in LOG_LEVELS:
        raise UsageError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level.upper())


def app_from_environment() -> FastAPI:
    """uvicorn factory for worker processes (settings passed by :func:`serve` through the environment)."""
    configure_logging(os.environ.get(_ENV_LOG_LEVEL, "info"))
    return create_app(from_environment(), run_migrations=False)


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          log_level: str = "info") -> None:
    """Run the service in the foreground until interrupted, logging from ``log_level`` up (see LOG_LEVELS)."""
    if workers < 1:
        raise UsageError("--workers must be at least 1")
    configure_logging(log_level)
    prepare(settings)
    common: dict[str, Any] = dict(host=host, port=port, log_level=log_level, server_header=False,
                                  timeout_keep_alive=30, http=NoDelayH11Protocol)
    if workers == 1:
        uvicorn.run(create_app(settings, run_migrations=False), **common)
    else:
        os.environ.update(settings.to_environment())
        os.environ[_ENV_LOG_LEVEL] = log_level
        uvicorn.run("sgx_iot.cloud.server:app_from_environment", factory=True, workers=workers, **common)


class BackgroundServer:
    """The service on ``127.0.0.1`` (a free port unless given) in a background thread; ``url`` once started.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, app: FastAPI, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        self.app = app
        self.host = host
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        config = uvicorn.Config(app, log_level=log_level, lifespan="on", server_header=False, http=NoDelayH11Protocol)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        """Start serving; return once the server accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the cloud service did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
