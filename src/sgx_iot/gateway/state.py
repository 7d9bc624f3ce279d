"""The gateway's state folder: its sealed key, the SIGSTRUCT it runs the enclave with, and its configuration.

Layout (every file written atomically with :func:`sgx_iot._fs.atomic_write`, mode 0600, folder 0700)::

    <state>/gateway.json       configuration (:class:`GatewayConfig`)
    <state>/sealed_key.bin     the private key, sealed by the enclave (sgx_sealed_data_t)
    <state>/public_key.pem     the host's copy of the public key (the enclave re-derives it at every ECALL)
    <state>/enclave.sigstruct  the SIGSTRUCT of the enclave in use (1808 bytes)

The folder is ``--state DIR``, else ``$SGX_IOT_GATEWAY_HOME``, else ``$XDG_DATA_HOME/sgx-iot/gateway`` (default
``~/.local/share/sgx-iot/gateway``). Other gateway components keep their own files beside these.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot._fs import atomic_write
from sgx_iot.errors import FormatError, UsageError

ENV_VAR = "SGX_IOT_GATEWAY_HOME"
CONFIG_FORMAT = "sgx-iot-gateway/1"
CONFIG_FILE = "gateway.json"
SEALED_KEY_FILE = "sealed_key.bin"
PUBLIC_KEY_FILE = "public_key.pem"
SIGSTRUCT_FILE = "enclave.sigstruct"
_POLICIES = ("mrsigner", "mrenclave")
_MAX_FILE = 1024 * 1024


def default_state_folder() -> Path:
    """``$SGX_IOT_GATEWAY_HOME``, else ``$XDG_DATA_HOME/sgx-iot/gateway``, else ``~/.local/share/sgx-iot/gateway``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home).expanduser() / "sgx-iot" / "gateway"


@dataclass(frozen=True)
class GatewayConfig:
    """``gateway.json``: how to run the enclave, and what it was when the key was provisioned.

    ``platform`` is the simulated platform folder (absolute), or None for the platform's own default;
    ``enclave`` records the identity (hex MRENCLAVE/MRSIGNER, ISVPRODID, ISVSVN, debug) the key was sealed by;
    ``sealed_key_sha256`` is the digest of ``sealed_key.bin`` that ``public_key.pem`` belongs to.
    """

    platform: str | None
    policy: str
    debug: bool
    platform_kind: str
    enclave: dict[str, Any]
    sealed_key_sha256: str

    def to_json(self) -> str:
        return json.dumps({"format": CONFIG_FORMAT, **asdict(self)}, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, source: str = CONFIG_FILE) -> GatewayConfig:
        """Parse strictly; ``FormatError`` naming the field otherwise."""
        doc = json_document(text, source, set(cls.__dataclass_fields__), CONFIG_FORMAT)
        if doc["platform"] is not None and not isinstance(doc["platform"], str):
            raise FormatError(source, "platform", None, "must be a folder path or null")
        if doc["policy"] not in _POLICIES:
            raise FormatError(source, "policy", None, "must be 'mrsigner' or 'mrenclave'")
        if not isinstance(doc["debug"], bool):
            raise FormatError(source, "debug", None, "must be true or false")
        if not isinstance(doc["platform_kind"], str) or not isinstance(doc["enclave"], dict):
            raise FormatError(source, "enclave", None, "platform_kind must be a string and enclave an object")
        if not isinstance(doc["sealed_key_sha256"], str) or len(doc["sealed_key_sha256"]) != 64:
            raise FormatError(source, "sealed_key_sha256", None, "must be 64 hex digits")
        return cls(**doc)


def json_document(text: str | bytes, source: str, fields: set[str], expected_format: str) -> dict[str, Any]:
    """The JSON object in ``text`` with exactly ``fields`` plus ``"format": expected_format`` (removed from the
    result); ``FormatError`` naming the first missing, unknown or wrong field otherwise."""
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(source, "(document)", None, f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise FormatError(source, "(document)", None, "must be a JSON object")
    expected = fields | {"format"}
    for name in sorted(expected - doc.keys()):
        raise FormatError(source, name, None, "missing field")
    for name in sorted(doc.keys() - expected):
        raise FormatError(source, name, None, "unknown field")
    if doc.pop("format") != expected_format:
        raise FormatError(source, "format", None, f"expected {expected_format!r}")
    return doc


class GatewayState:
    """Access to one state folder. Reading methods raise ``UsageError`` with what to do when a file is missing."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = Path(folder).expanduser() if folder is not None else default_state_folder()

    def __repr__(self) -> str:
        return f"GatewayState({str(self.folder)!r})"

    @property
    def config_path(self) -> Path:
        return self.folder / CONFIG_FILE

    @property
    def sealed_key_path(self) -> Path:
        return self.folder / SEALED_KEY_FILE

    @property
    def public_key_path(self) -> Path:
        return self.folder / PUBLIC_KEY_FILE

    @property
    def sigstruct_path(self) -> Path:
        return self.folder / SIGSTRUCT_FILE

    def is_provisioned(self) -> bool:
        """True when the folder holds a configuration and a sealed key."""
        return self.config_path.is_file() and self.sealed_key_path.is_file()

    # --- reading -------------------------------------------------------------------------------------------

    def config(self) -> GatewayConfig:
        """The configuration; ``UsageError`` if the gateway was never initialised."""
        return GatewayConfig.from_json(self._read(self.config_path), str(self.config_path))

    def sealed_key(self) -> bytes:
        """The sealed private key blob."""
        return self._read(self.sealed_key_path)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The host's copy of the public key."""
        data = self._read(self.public_key_path)
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError:
            raise FormatError(str(self.public_key_path), "(file)", None, "not a PEM public key") from None
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise FormatError(str(self.public_key_path), "(file)", None, "not an EC public key")
        return key

    def _read(self, path: Path) -> bytes:
        try:
            with path.open("rb") as handle:
                data = handle.read(_MAX_FILE + 1)
        except FileNotFoundError:
            if not self.config_path.exists():
                raise UsageError(f"the gateway in {self.folder} has no sealed key yet; run `sgx-iot gateway init` "
                                 "first") from None
            raise UsageError(f"{path} is missing from the gateway state; run `sgx-iot gateway init --force` to "
                             "provision a new key") from None
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
        if len(data) > _MAX_FILE:
            raise FormatError(str(path), "(file)", None, f"larger than {_MAX_FILE} bytes")
        return data

    # --- writing (each file atomic) ------------------------------------------------------------------------

    def ensure_folder(self) -> None:
        """Create the folder (0700) if needed."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def write_sigstruct(self, data: bytes) -> None:
        """Install the SIGSTRUCT the enclave is launched with (atomic, 0600)."""
        self.ensure_folder()
        atomic_write(self.sigstruct_path, data)

    def write_sealed_key(self, data: bytes) -> None:
        """Store the sealed key blob (atomic, 0600: an old or new blob survives a crash, never a torn one)."""
        self.ensure_folder()
        atomic_write(self.sealed_key_path, data)

    def write_public_key(self, key: ec.EllipticCurvePublicKey) -> None:
        """Store the host copy of the public key as PEM (atomic, 0644: it is public)."""
        self.ensure_folder()
        atomic_write(self.public_key_path, public_key_pem(key).encode("ascii"), mode=0o644)

    def write_config(self, config: GatewayConfig) -> None:
        """Store ``gateway.json`` (atomic, 0600)."""
        self.ensure_folder()
        atomic_write(self.config_path, config.to_json().encode("utf-8"))


def public_key_pem(key: ec.EllipticCurvePublicKey) -> str:
    """SubjectPublicKeyInfo PEM text."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def sha256_hex(data: bytes) -> str:
    """SHA-256 of ``data`` as 64 lowercase hex digits."""
    return hashlib.sha256(data).hexdigest()
