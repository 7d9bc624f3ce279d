"""End-to-end fixtures: a running cloud service and provisioned gateways on the real simulated platform.

Nothing is mocked: the gateway's enclave is sgx-iot's own enclave program, signed and EINITed on a simulated
platform in a temporary folder (its own process, as in production); the cloud is ``create_app`` served by uvicorn
on a free 127.0.0.1 port, with a SQLite file, a policy that trusts that platform's root and allows exactly that
enclave's MRENCLAVE, and the platform's collateral.

Use the fixtures by importing them into a test module::

    from _e2e_helpers import E2E, e2e, e2e_world  # noqa: F401  (fixtures)

``e2e_world`` (once per session) makes the platform and signs the enclave; ``e2e`` (per test) starts a fresh
cloud and offers :meth:`E2E.gateway` (provision, optionally register) and :meth:`E2E.cli` (run ``sgx-iot`` in a
subprocess with a gateway's state folder).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sgx_iot.enclave.image import build, installed_source_root
from sgx_iot.enclave.signing import sign_enclave, write_sigstruct
from sgx_iot.gateway.provisioning import init_gateway
from sgx_iot.gateway.registration import Registration, register
from sgx_iot.gateway.state import GatewayState
from sgx_iot.platform.sim import PlatformStore, build_collateral
from sgx_iot.sgx.sigstruct import generate_signing_key
from sgx_iot.verify.collateral import FixedCollateral
from sgx_iot.verify.policy import Policy, TrustRoot

ADMIN_TOKEN = "e2e-admin-token-" + "y" * 16


@functools.cache
def enclave_signing_key() -> rsa.RSAPrivateKey:
    """The RSA-3072 e=3 key that signs the enclave (slow to generate: once per session)."""
    return generate_signing_key()


@dataclass(frozen=True)
class World:
    """A simulated platform and sgx-iot's enclave signed for it."""

    folder: Path
    platform: Path
    sigstruct: Path
    mrenclave: bytes
    root_der: bytes

    def policy(self, **overrides: Any) -> Policy:
        """Trust this platform's root; allow exactly this enclave."""
        values: dict[str, Any] = dict(mrenclaves=frozenset({self.mrenclave}), trust_intel=False,
                                      roots=(TrustRoot.from_der(self.root_der, "sgx-iot simulation root"),))
        values.update(overrides)
        return Policy(**values)

    def collateral(self) -> FixedCollateral:
        return FixedCollateral(build_collateral(PlatformStore.open(self.platform)).to_json())


def make_world(folder: Path) -> World:
    """Create the platform in ``folder/platform`` and sign the enclave of this source tree."""
    folder.mkdir(parents=True, exist_ok=True)
    store = PlatformStore.open(folder / "platform")
    built = build(installed_source_root())
    sigstruct = folder / "enclave.sigstruct"
    write_sigstruct(sign_enclave(enclave_signing_key(), built.source_root, enclave=built), sigstruct)
    return World(folder, folder / "platform", sigstruct, built.mrenclave, store.pki.root_der())


@dataclass(frozen=True)
class StoredRow:
    """A reading as the cloud stored it."""

    seq: int
    timestamp: int
    payload: bytes
    signature: bytes
    key_sha256: str


class CloudServer:
    """The cloud service on a loopback port that survives :meth:`stop` / :meth:`start` (a restart keeps the
    database and the port, as a real restart would)."""

    def __init__(self, home: Path, policy: Policy, collateral: FixedCollateral, port: int = 0) -> None:
        from sgx_iot.cloud.settings import Settings

        self.settings = Settings(home=home, policy=policy, admin_token=ADMIN_TOKEN)
        self.collateral = collateral
        self.port = port
        self._server: Any = None
        self.app: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> CloudServer:
        from sgx_iot.cloud.api import create_app
        from sgx_iot.cloud.server import BackgroundServer

        self.app = create_app(self.settings, collateral=self.collateral)
        self._server = BackgroundServer(self.app, port=self.port).start()
        self.port = self._server.port
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def service(self) -> Any:
        """The :class:`sgx_iot.cloud.service.CloudService` (works while stopped too: it reads the database)."""
        return self.app.state.service

    def readings(self, gateway: str) -> list[StoredRow]:
        """Every stored reading of ``gateway``, by sequence number, read from the database.

        (Not through ``GET /v1/readings``: it pages by timestamp, and thousands of readings share one second.)
        """
        from sqlalchemy import select

        from sgx_iot.cloud.models import GatewayRow, ReadingRow

        query = (select(ReadingRow).join(GatewayRow, GatewayRow.id == ReadingRow.gateway_id)
                 .where(GatewayRow.name == gateway).order_by(ReadingRow.seq))
        with self.service.sessions() as s:
            return [StoredRow(r.seq, r.timestamp, bytes(r.payload), bytes(r.signature), r.key_sha256)
                    for r in s.scalars(query)]

    def revoke(self, name: str) -> None:
        self.service.revoke(name, "test")


@dataclass(frozen=True)
class Result:
    """How an ``sgx-iot`` command ended."""

    returncode: int
    stdout: bytes
    stderr: bytes


@dataclass
class E2E:
    """One test's world: the session's platform and enclave, a fresh cloud, and gateways made on demand."""

    world: World
    tmp: Path
    cloud: CloudServer
    gateways: list[GatewayState] = field(default_factory=list)

    def gateway(self, name: str = "gw-1", *, registered: bool = True, folder: Path | None = None) -> GatewayState:
        """A provisioned gateway (state folder ``tmp/<name>``), registered with the cloud as ``name`` unless told."""
        state = GatewayState(folder or self.tmp / name)
        init_gateway(state, sigstruct=self.world.sigstruct, platform=self.world.platform)
        if registered:
            self.register(state, name)
        self.gateways.append(state)
        return state

    def register(self, state: GatewayState, name: str) -> Registration:
        return register(state, self.cloud.url, name)

    def env(self, state: GatewayState) -> dict[str, str]:
        """Environment for an ``sgx-iot`` subprocess working on ``state``."""
        env = dict(os.environ)
        env["SGX_IOT_GATEWAY_HOME"] = str(state.folder)
        env["SGX_IOT_PLATFORM"] = str(self.world.platform)
        env["COLUMNS"] = "200"
        env.pop("SGX_IOT_CLOUD_HOME", None)
        return env

    def command(self, *args: str) -> list[str]:
        """The command line running ``sgx-iot ARGS`` with this interpreter."""
        return [sys.executable, "-c", "from sgx_iot.cli.main import main; main()", *args]

    def cli(self, state: GatewayState, *args: str, input: bytes | None = None) -> Result:
        """Run ``sgx-iot ARGS`` for gateway ``state`` in this process (the enclave still runs in its own)."""
        from typer.testing import CliRunner

        from sgx_iot.cli.main import app

        env = {k: v for k, v in self.env(state).items() if os.environ.get(k) != v}
        result = CliRunner().invoke(app, list(args), input=input, env=env, catch_exceptions=False)
        return Result(result.exit_code, result.stdout_bytes, result.stderr_bytes)

    def process(self, state: GatewayState, *args: str, input: bytes | None = None,
                timeout: float = 120) -> Result:  # fmt: skip
        """Run ``sgx-iot ARGS`` for gateway ``state`` in a subprocess, to completion."""
        done = subprocess.run(self.command(*args), env=self.env(state), input=input, capture_output=True,
                              timeout=timeout, check=False)  # fmt: skip
        return Result(done.returncode, done.stdout, done.stderr)

    def popen(self, state: GatewayState, *args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start ``sgx-iot ARGS`` for gateway ``state`` (stdout/stderr piped unless given)."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen(self.command(*args), env=self.env(state), **kwargs)


def json_lines(output: bytes) -> list[dict[str, Any]]:
    """The JSON objects of a JSON Lines output."""
    return [json.loads(line) for line in output.decode().splitlines() if line.strip().startswith("{")]


def payloads(n: int, prefix: str = "reading") -> list[bytes]:
    """``n`` distinct payloads."""
    return [f"{prefix}-{i:06d}".encode() for i in range(n)]


def seqs(items: Sequence[Any]) -> list[int]:
    return [getattr(item, "seq", None) if hasattr(item, "seq") else item.reading.seq for item in items]


@pytest.fixture(scope="session")
def e2e_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The session's simulated platform and signed enclave."""
    return make_world(tmp_path_factory.mktemp("e2e-world"))


@pytest.fixture
def e2e(e2e_world: World, tmp_path: Path) -> Iterator[E2E]:
    """A fresh cloud (SQLite in ``tmp_path``) for this test, stopped afterwards."""
    cloud = CloudServer(tmp_path / "cloud", e2e_world.policy(), e2e_world.collateral()).start()
    try:
        yield E2E(e2e_world, tmp_path, cloud)
    finally:
        cloud.stop()
