"""Configuration of the cloud service: data folder, database URL, policy, admin token, collateral, limits.

The data folder (``$SGX_IOT_CLOUD_HOME``, else ``$XDG_DATA_HOME/sgx-iot/cloud``, else
``~/.local/share/sgx-iot/cloud``) holds the default SQLite database ``cloud.db``, the default policy
``policy.toml`` and the verifier's EAR signing key ``verifier-key.pem`` (created on first start, mode 0600).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot._fs import atomic_write
from sgx_iot.errors import UsageError
from sgx_iot.verify.collateral import CollateralSource, FileCollateral, PccsCollateral
from sgx_iot.verify.ear import DEFAULT_LIFETIME
from sgx_iot.verify.policy import Policy

DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024
DEFAULT_MAX_BATCH = 1000
_ENV_SETTINGS = "SGX_IOT_CLOUD_SETTINGS"
_ENV_ADMIN_TOKEN = "SGX_IOT_CLOUD_ADMIN_TOKEN"


def default_home() -> Path:
    """The cloud's data folder (see the module docstring)."""
    env = os.environ.get("SGX_IOT_CLOUD_HOME")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "sgx-iot" / "cloud"


@dataclass(frozen=True)
class Settings:
    """Everything the service needs. Build with :func:`load_settings` (files) or directly (tests)."""

    home: Path
    policy: Policy
    db_url: str = ""
    db_schema: str | None = None
    admin_token: str | None = field(default=None, repr=False)
    collateral_file: Path | None = None
    pccs_url: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch: int = DEFAULT_MAX_BATCH
    ear_lifetime: int = DEFAULT_LIFETIME

    def __post_init__(self) -> None:
        if not self.db_url:
            object.__setattr__(self, "db_url", f"sqlite:///{Path(self.home).resolve() / 'cloud.db'}")
        if self.collateral_file is not None and self.pccs_url is not None:
            raise UsageError("give either a collateral file or a PCCS URL, not both")
        if self.admin_token is not None and len(self.admin_token) < 16:
            raise UsageError("the admin token must be at least 16 characters")

    @property
    def verifier_key_path(self) -> Path:
        """Where the verifier's EAR signing key lives."""
        return Path(self.home) / "verifier-key.pem"

    def collateral_source(self) -> CollateralSource | None:
        """The configured collateral source (``None``: use the collateral carried in the evidence)."""
        if self.collateral_file is not None:
            return FileCollateral(self.collateral_file)
        if self.pccs_url is not None:
            return PccsCollateral(self.pccs_url)
        return None

    def verifier_key(self) -> ec.EllipticCurvePrivateKey:
        """Load the verifier's P-256 EAR signing key, creating it (mode 0600) on first use."""
        path = self.verifier_key_path
        if not path.exists():
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            atomic_write(path, pem, mode=0o600)
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError):
            raise UsageError(f"{path} is not an unencrypted PEM private key; remove it to create a new one") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise UsageError(f"{path} is not a P-256 key; remove it to create a new one")
        return key

    def to_environment(self) -> dict[str, str]:
        """Environment variables from which worker processes rebuild these settings (see :func:`from_environment`)."""
        doc: dict[str, Any] = {
            "home": str(self.home), "policy": self.policy.to_toml(), "db_url": self.db_url,
            "db_schema": self.db_schema, "collateral_file": str(self.collateral_file) if self.collateral_file else None,
            "pccs_url": self.pccs_url, "max_body_bytes": self.max_body_bytes, "max_batch": self.max_batch,
            "ear_lifetime": self.ear_lifetime,
        }
        env = {_ENV_SETTINGS: json.dumps(doc)}
        if self.admin_token is not None:
            env[_ENV_ADMIN_TOKEN] = self.admin_token
        return env


def from_environment() -> Settings:
    """Settings handed to a worker process by :meth:`Settings.to_environment`."""
    doc = json.loads(os.environ[_ENV_SETTINGS])
    doc["home"] = Path(doc["home"])
    doc["policy"] = Policy.from_toml(doc["policy"])
    doc["collateral_file"] = Path(doc["collateral_file"]) if doc["collateral_file"] else None
    return Settings(admin_token=os.environ.get(_ENV_ADMIN_TOKEN), **doc)


def load_settings(
    *,
    home: Path | None = None,
    db_url: str | None = None,
    policy_path: Path | None = None,
    admin_token_file: Path | None = None,
    collateral_file: Path | None = None,
    pccs_url: str | None = None,
    **overrides: Any,
) -> Settings:
    """Settings from files: the policy (default ``HOME/policy.toml``) and the admin token file (optional;
    ``$SGX_IOT_CLOUD_ADMIN_TOKEN`` otherwise). Raises ``UsageError`` saying what is missing, ``FormatError`` for a
    bad policy."""
    home = Path(home) if home is not None else default_home()
    policy_path = policy_path or home / "policy.toml"
    if not policy_path.is_file():
        raise UsageError(
            f"no appraisal policy at {policy_path}: write one (see docs/api.md, 'Policy') or pass --policy FILE"
        )
    policy = Policy.load(policy_path)
    token: str | None = None
    if admin_token_file is not None:
        try:
            token = admin_token_file.read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read the admin token file {admin_token_file}: {exc.strerror or exc}") from None
    else:
        token = os.environ.get(_ENV_ADMIN_TOKEN) or None
    settings = Settings(home=home, policy=policy, db_url=db_url or "", admin_token=token,
                        collateral_file=collateral_file, pccs_url=pccs_url)
    return replace(settings, **overrides) if overrides else settings
