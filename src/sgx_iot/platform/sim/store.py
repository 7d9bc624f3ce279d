"""The simulated platform's persistent folder: its secret, its PKI, its attestation key and its configuration.

Layout (folder mode 0700; files holding secrets 0600, the rest 0644; every write atomic)::

    platform.json            configuration: platform identity (CPUSVN, PCESVN, FMSPC, PPID, QE SVN …) and the
                             TCB state the collateral states (status, advisories, PCK revocation, validity)
    platform-secret.bin      32 random bytes: the "fused" secret every EGETKEY key derives from      (0600)
    qe-attestation-key.pem   the quoting enclave's ECDSA attestation key                              (0600)
    pck.key, processor-ca.key, tcb-signing.key, root-ca.key                                           (0600)
    pck.pem, processor-ca.pem, tcb-signing.pem, root-ca.pem

The folder is ``$SGX_IOT_PLATFORM`` if set, else ``$XDG_DATA_HOME/sgx-iot/platform`` (default
``~/.local/share/sgx-iot/platform``); :meth:`PlatformStore.open` creates it on first use. A real platform keeps the
Intel-side keys (root, Processor CA, TCB signing) at Intel; the simulation keeps them here so it can issue its own
collateral. ``platform.json`` is :class:`~sgx_iot.platform.sim.config.PlatformConfig`.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_iot._fs import atomic_write, atomic_write_text
from sgx_iot.errors import PlatformError, UsageError
from sgx_iot.platform.sim.config import (
    DEFAULT_CPU_SVN,
    DEFAULT_FMSPC,
    DEFAULT_PCE_ID,
    DEFAULT_PCE_SVN,
    DEFAULT_QE_SVN,
    TCB_STATUSES,
    PlatformConfig,
    TcbSettings,
    check_tcb_settings,
)
from sgx_iot.platform.sim.pki import Pki, PckInfo, create_pki

__all__ = ["ENV_VAR", "TCB_STATUSES", "PlatformConfig", "PlatformStore", "TcbSettings", "default_folder",
           "initialise", "platform_folder"]  # fmt: skip

ENV_VAR = "SGX_IOT_PLATFORM"
_CONFIG = "platform.json"
_SECRET = "platform-secret.bin"
_ATTESTATION_KEY = "qe-attestation-key.pem"
_PKI_FILES = {
    "root": ("root-ca.pem", "root-ca.key"),
    "processor": ("processor-ca.pem", "processor-ca.key"),
    "pck": ("pck.pem", "pck.key"),
    "tcb_signing": ("tcb-signing.pem", "tcb-signing.key"),
}


def default_folder() -> Path:
    """``$SGX_IOT_PLATFORM``, else ``$XDG_DATA_HOME/sgx-iot/platform``, else ``~/.local/share/sgx-iot/platform``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home).expanduser() / "sgx-iot" / "platform"


def platform_folder(folder: str | os.PathLike[str] | None) -> Path:
    """``folder`` (``~`` expanded), or :func:`default_folder` when None; ``UsageError`` when it names a file."""
    path = Path(folder).expanduser() if folder is not None else default_folder()
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} is a file, not a simulated platform folder; give a folder (an empty or missing "
                         "one is initialised)")
    return path


class PlatformStore:
    """One simulated platform's folder, loaded. Secrets stay in private attributes and out of ``repr``."""

    def __init__(self, folder: Path, config: PlatformConfig, pki: Pki, secret: bytes | None,
                 attestation_key: ec.EllipticCurvePrivateKey | None) -> None:  # fmt: skip
        self.folder = folder
        self.config = config
        self.pki = pki
        self._secret = secret
        self._attestation_key = attestation_key

    def __repr__(self) -> str:
        return f"PlatformStore(folder={str(self.folder)!r}, kind='simulated')"

    @property
    def secret(self) -> bytes:
        """The platform's 32-byte root secret (for key derivation inside the platform only).

        ``PlatformError`` PLATFORM_SECRETS_NOT_LOADED when the store was opened with ``secrets=False``."""
        if self._secret is None:
            raise _not_loaded(self.folder)
        return self._secret

    @property
    def attestation_key(self) -> ec.EllipticCurvePrivateKey:
        """The quoting enclave's attestation key (PLATFORM_SECRETS_NOT_LOADED as for :attr:`secret`)."""
        if self._attestation_key is None:
            raise _not_loaded(self.folder)
        return self._attestation_key

    # --- opening / creating ------------------------------------------------------------------------------

    @classmethod
    def open(cls, folder: str | os.PathLike[str] | None = None, *, create: bool = True,
             secrets: bool = True) -> PlatformStore:  # fmt: skip
        """Load the platform in ``folder`` (default :func:`default_folder`), creating it first if absent and
        ``create``. ``PlatformError`` PLATFORM_NOT_INITIALISED / PLATFORM_CORRUPT / PLATFORM_INSECURE.

        ``secrets=False`` leaves the root secret (from which every sealing key derives) and the QE attestation key
        on disk: what a process outside the platform (the gateway host issuing collateral, the PCCS) opens."""
        path = platform_folder(folder)
        if not (path / _CONFIG).is_file():
            if not create:
                raise PlatformError(
                    "PLATFORM_NOT_INITIALISED",
                    f"no simulated platform in {path}; create one with `sgx-iot sim init --platform {path}`",
                )
            return cls.init(path)
        return cls._load(path, secrets=secrets)

    @classmethod
    def init(
        cls,
        folder: str | os.PathLike[str] | None = None,
        *,
        tcb_status: str = "UpToDate",
        advisories: Sequence[str] = (),
        force: bool = False,
        now: datetime.datetime | None = None,
    ) -> PlatformStore:
        """Create a new platform (fresh secret, PKI, attestation key, random PPID and QE ID) in ``folder``.

        An existing platform is kept (and returned) unless ``force``, which replaces every secret: keys sealed
        on the old platform can no longer be unsealed.
        """
        status, advisories = check_tcb_settings(tcb_status, advisories)
        path = platform_folder(folder)
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _locked(path):
            if (path / _CONFIG).is_file() and not force:
                return cls._load(path)
            if not force and any(p.name != ".lock" for p in path.iterdir()):
                raise UsageError(f"{path} is not empty and holds no simulated platform; choose an empty folder")
            os.chmod(path, 0o700)
            moment = (now or datetime.datetime.now(datetime.timezone.utc)).replace(microsecond=0)
            info = PckInfo(ppid=secrets.token_bytes(16), cpu_svn=DEFAULT_CPU_SVN, pce_svn=DEFAULT_PCE_SVN,
                           pce_id=DEFAULT_PCE_ID, fmspc=DEFAULT_FMSPC)  # fmt: skip
            config = PlatformConfig(
                created=moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
                pck=info,
                qe_id=secrets.token_bytes(16),
                qe_svn=DEFAULT_QE_SVN,
                tcb=TcbSettings(status=status, advisories=advisories),
            )
            store = cls(path, config, create_pki(info, moment), secrets.token_bytes(32),
                        ec.generate_private_key(ec.SECP256R1()))  # fmt: skip
            store._write_all()
            return store

    @classmethod
    def _load(cls, path: Path, *, secrets: bool = True) -> PlatformStore:
        config = PlatformConfig.from_json(_read_text(path / _CONFIG), path / _CONFIG)
        certs: dict[str, x509.Certificate] = {}
        keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        for role, (cert_name, key_name) in _PKI_FILES.items():
            certs[role] = _load_cert(path / cert_name)
            keys[role] = _load_key(path / key_name)
        pki = Pki(certs["root"], certs["processor"], certs["pck"], certs["tcb_signing"],
                  keys["root"], keys["processor"], keys["pck"], keys["tcb_signing"])  # fmt: skip
        if not secrets:
            return cls(path, config, pki, None, None)
        secret = _read_secret(path / _SECRET)
        if len(secret) != 32:
            raise PlatformError("PLATFORM_CORRUPT", f"{path / _SECRET} must hold 32 bytes, not {len(secret)}")
        return cls(path, config, pki, secret, _load_key(path / _ATTESTATION_KEY))

    def _write_all(self) -> None:
        atomic_write(self.folder / _SECRET, self.secret, mode=0o600)
        atomic_write(self.folder / _ATTESTATION_KEY, _key_pem(self.attestation_key), mode=0o600)
        pki = self.pki
        pairs = {
            "root": (pki.root_cert, pki.root_key),
            "processor": (pki.processor_cert, pki.processor_key),
            "pck": (pki.pck_cert, pki.pck_key),
            "tcb_signing": (pki.tcb_signing_cert, pki.tcb_signing_key),
        }
        for role, (cert, key) in pairs.items():
            cert_name, key_name = _PKI_FILES[role]
            atomic_write(self.folder / key_name, _key_pem(key), mode=0o600)
            atomic_write(self.folder / cert_name, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
        atomic_write_text(self.folder / _CONFIG, self.config.to_json(), mode=0o644)

    # --- configuration changes ---------------------------------------------------------------------------

    def set_tcb(self, status: str, advisories: Sequence[str] = ()) -> None:
        """Make the collateral state TCB ``status`` with ``advisories`` from now on."""
        status, advisories = check_tcb_settings(status, advisories)
        self._update(lambda tcb: replace(tcb, status=status, advisories=advisories))

    def set_pck_revoked(self, revoked: bool = True) -> None:
        """Put the PCK certificate on (or take it off) the PCK CRL."""
        self._update(lambda tcb: replace(tcb, pck_revoked=revoked))

    def set_validity_days(self, days: int) -> None:
        """How long issued collateral (TCB info, QE identity, CRLs) stays valid."""
        if not 0 < days <= 3650:
            raise UsageError(f"validity must be between 1 and 3650 days, not {days}")
        self._update(lambda tcb: replace(tcb, validity_days=days))

    def set_qe_svn(self, svn: int) -> None:
        """The quoting enclave's ISVSVN (quotes of SimPlatforms opened afterwards carry it; so does the QE
        identity, whose only TCB level is this ISVSVN, UpToDate)."""
        if not 0 <= svn <= 0xFFFF:
            raise UsageError(f"QE ISVSVN must be between 0 and 65535, not {svn}")
        self._update(lambda config: replace(config, qe_svn=svn), whole=True)

    def _update(self, change: Any, *, whole: bool = False) -> None:
        with _locked(self.folder):
            current = PlatformConfig.from_json(_read_text(self.folder / _CONFIG), self.folder / _CONFIG)
            updated = change(current) if whole else replace(current, tcb=change(current.tcb))
            atomic_write_text(self.folder / _CONFIG, updated.to_json(), mode=0o644)
            self.config = updated


def _not_loaded(folder: Path) -> PlatformError:
    return PlatformError("PLATFORM_SECRETS_NOT_LOADED", f"the platform in {folder} was opened without its secrets "
                         "(only the platform itself may hold them)")


def initialise(
    folder: str | os.PathLike[str] | None = None,
    *,
    tcb_status: str | None = None,
    advisories: Sequence[str] = (),
    force: bool = False,
) -> tuple[PlatformStore, bool]:
    """``sgx-iot sim init``: create the platform (TCB status default UpToDate), or keep the existing one and apply
    ``tcb_status``/``advisories`` if given; ``force`` replaces it. Returns the store and whether it is new."""
    path = platform_folder(folder)
    if not force and (path / _CONFIG).is_file():
        store = PlatformStore.open(path, create=False)
        if tcb_status is not None or advisories:
            store.set_tcb(tcb_status or store.config.tcb.status, advisories)
        return store, False
    return PlatformStore.init(path, tcb_status=tcb_status or "UpToDate", advisories=advisories, force=force), True


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Serialise creation and configuration changes between processes sharing the folder."""
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def _read_text(path: Path) -> str:
    try:
        return path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlatformError("PLATFORM_CORRUPT", f"cannot read {path}: {exc}") from None


def _read_secret(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise PlatformError(
                "PLATFORM_INSECURE", f"{path} is accessible to other users (mode {stat.filemode(mode)}); chmod 600 it"
            )
        return path.read_bytes()
    except OSError as exc:
        raise PlatformError(
            "PLATFORM_CORRUPT", f"cannot read {path}: {exc.strerror}; recreate with `sgx-iot sim init --force`"
        ) from None


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    data = _read_secret(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError:
        raise PlatformError("PLATFORM_CORRUPT", f"{path} is not a PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise PlatformError("PLATFORM_CORRUPT", f"{path} is not a P-256 private key")
    return key


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise PlatformError("PLATFORM_CORRUPT", f"cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise PlatformError("PLATFORM_CORRUPT", f"{path} is not a PEM certificate") from None
