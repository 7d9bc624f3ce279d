"""Helpers for the threat, crash, load and hygiene tests: a real gateway (the sgx-iot enclave on a simulated
platform), a cloud run as a real ``sgx-iot cloud serve`` subprocess, and signed readings.

Builds on :mod:`_cloud_helpers` (simulated evidence, databases, an in-process service); nothing here is mocked.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from _cloud_helpers import ADMIN_TOKEN
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot.platform.sim.store import PlatformStore
from sgx_iot.verify.policy import Policy, TrustRoot
from sgx_iot.verify.readings import Reading, SignedReading, sign_reading

REPO_ROOT = Path(__file__).resolve().parent.parent
SGX_IOT = [str(Path(sys.executable).with_name("sgx-iot"))]  # the console script of this environment


# --- a real gateway -------------------------------------------------------------------------------------------

@functools.cache
def real_sigstruct() -> bytes:
    """The SIGSTRUCT of sgx-iot's own enclave (this source tree), signed with a key made once per session."""
    from sgx_iot.enclave.image import installed_source_root
    from sgx_iot.enclave.signing import sign_enclave
    from sgx_iot.sgx.sigstruct import generate_signing_key

    return sign_enclave(generate_signing_key(), installed_source_root()).to_bytes()


@dataclass
class RealGateway:
    """A gateway provisioned with the real enclave program: ``state`` folder on the ``platform`` folder."""

    folder: Path
    state: Path
    platform: Path
    sigstruct: Path

    def policy(self, **overrides: Any) -> Policy:
        """A policy trusting this platform's simulated root and allowing this enclave's MRENCLAVE."""
        from sgx_iot.sgx.sigstruct import Sigstruct

        mrenclave = Sigstruct.parse(self.sigstruct.read_bytes()).enclave_hash
        root = PlatformStore.open(self.platform, create=False).pki.root_der()
        values: dict[str, Any] = dict(mrenclaves=frozenset({mrenclave}),
                                      roots=(TrustRoot.from_der(root, "sgx-iot simulation root"),))
        values.update(overrides)
        return Policy(**values)

    def policy_toml(self) -> Path:
        """The policy written as a file beside the gateway (for ``sgx-iot cloud serve --policy``)."""
        path = self.folder / "policy.toml"
        path.write_text(self.policy().to_toml())
        return path


def real_gateway(folder: Path, *, provision: bool = True) -> RealGateway:
    """Create the folders, write the SIGSTRUCT and (unless told not to) provision the key in the enclave."""
    from sgx_iot.gateway.provisioning import init_gateway
    from sgx_iot.gateway.state import GatewayState

    folder.mkdir(parents=True, exist_ok=True)
    sigstruct = folder / "enclave.sigstruct"
    sigstruct.write_bytes(real_sigstruct())
    gw = RealGateway(folder, folder / "state", folder / "platform", sigstruct)
    PlatformStore.open(gw.platform)  # create the platform now, so its root is known before any provisioning
    if provision:
        init_gateway(GatewayState(gw.state), sigstruct=sigstruct, platform=gw.platform)
    return gw


# --- signed readings ------------------------------------------------------------------------------------------

def signed(key: ec.EllipticCurvePrivateKey, gateway: str, seq: int, payload: bytes = b"",
           timestamp: int = 1_700_000_000) -> SignedReading:
    """A reading signed with ``key`` (stands for the enclave's signature)."""
    reading = Reading(gateway, seq, timestamp, payload or f"t={seq}".encode())
    return SignedReading(reading, sign_reading(reading, key))


def batch(readings: Iterable[SignedReading]) -> dict[str, Any]:
    """The JSON body of ``POST /v1/readings``."""
    return {"readings": [r.to_dict() for r in readings]}


# --- a cloud in its own process ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_SERVE_AT_LEVEL = """
import logging, sys
from pathlib import Path
from sgx_iot.cloud.server import serve
from sgx_iot.cloud.settings import load_settings
home, policy, port, token, db, level, sql = sys.argv[1:]
logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
if sql:  # SQLAlchemy keeps its loggers at WARNING unless they are configured: what an operator debugging SQL does
    logging.getLogger("sqlalchemy").setLevel(level.upper())
settings = load_settings(home=Path(home), policy_path=Path(policy), admin_token_file=Path(token), db_url=db or None)
serve(settings, port=int(port), log_level=level)
"""


class CloudProcess:
    """``sgx-iot cloud serve`` as a subprocess on a loopback port, output to ``log`` (killable with SIGKILL).

    ``log_level`` is passed as ``--log-level``; with ``sql_logging`` the same service is started by
    ``sgx_iot.cloud.server.serve`` with SQLAlchemy's loggers at that level too (what an operator debugging SQL does;
    the CLI has no option for it).
    """

    def __init__(self, home: Path, policy: Path, *, db_url: str | None = None, port: int | None = None,
                 log: Path | None = None, log_level: str | None = None, sql_logging: bool = False) -> None:
        self.home = home
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log or home.parent / f"cloud-{self.port}.log"
        token_file = home.parent / "admin-token"
        token_file.write_text(ADMIN_TOKEN + "\n")
        if not sql_logging:
            self.args = [*SGX_IOT, "cloud", "serve", "--home", str(home), "--policy", str(policy), "--port",
                         str(self.port), "--admin-token-file", str(token_file)] + (["--db", db_url] if db_url else [])
            self.args += ["--log-level", log_level] if log_level else []
        else:
            self.args = [sys.executable, "-c", _SERVE_AT_LEVEL, str(home), str(policy), str(self.port),
                         str(token_file), db_url or "", log_level or "debug", "sql"]
        self.env = dict(os.environ)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> CloudProcess:
        """Start and wait until ``/healthz`` answers."""
        handle = self.log.open("ab")
        self.process = subprocess.Popen(self.args, stdout=handle, stderr=subprocess.STDOUT, env=self.env,
                                        cwd=self.home.parent, start_new_session=True)
        handle.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the cloud exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"the cloud did not start:\n{self.log.read_text()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL, as a power cut would."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after a while)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
