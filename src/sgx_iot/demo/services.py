"""The demo's cloud service, on a free loopback port in a background thread, and what an operator reads from it.

The service is the real one (:mod:`sgx_iot.cloud`, SQLite in the demo's folder) started the way ``sgx-iot cloud
serve`` starts it (:func:`~sgx_iot.cloud.settings.load_settings`, :func:`~sgx_iot.cloud.server.prepare`), only in
a thread of this process instead of the foreground.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot.cloud.api import create_app
from sgx_iot.cloud.server import BackgroundServer, prepare
from sgx_iot.cloud.settings import Settings, load_settings
from sgx_iot.verify.appraise import load_p256_public_key

_TIMEOUT = 30.0


@dataclass
class RunningCloud:
    """A running cloud service: its URL, its settings, and read access to its public API."""

    url: str
    settings: Settings
    http: httpx.Client

    def _get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params={k: v for k, v in params.items() if v is not None})
        response.raise_for_status()
        return response.json()

    def health(self) -> dict[str, Any]:
        """``GET /healthz``."""
        return dict(self._get("/healthz"))

    def verifier_key(self) -> ec.EllipticCurvePublicKey:
        """The verifier's EAR public key, from ``GET /v1/verifier``."""
        return load_p256_public_key(self._get("/v1/verifier")["public_key"])

    def gateways(self) -> list[dict[str, Any]]:
        """``GET /v1/gateways``."""
        return list(self._get("/v1/gateways"))

    def gateway(self, name: str) -> dict[str, Any]:
        """``GET /v1/gateways/{name}``."""
        return dict(self._get(f"/v1/gateways/{name}"))

    def readings(self, gateway: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """``GET /v1/readings?gateway=…&limit=…``."""
        return list(self._get("/v1/readings", gateway=gateway, limit=limit)["readings"])


@contextmanager
def running_cloud(home: Path, policy_path: Path, *, pccs_url: str | None = None) -> Iterator[RunningCloud]:
    """Serve the cloud with data folder ``home`` and the policy file ``policy_path`` on ``127.0.0.1`` (a free port);
    collateral from ``pccs_url`` (else the evidence's own). Stops on exit."""
    settings = load_settings(home=home, policy_path=policy_path, pccs_url=pccs_url)
    prepare(settings)
    app = create_app(settings, run_migrations=False)
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=_TIMEOUT) as http:
        yield RunningCloud(server.url, settings, http)
