"""The appraisal policy: which roots, TCB statuses, enclaves and nonce lifetime a verifier accepts.

A policy is a TOML file, strictly parsed (an unknown key or a bad value is a :class:`FormatError` naming the
key)::

    [trust]
    intel = true                          # trust Intel's SGX Root CA (built in); default true
    roots = ["sim-root.pem"]              # extra roots (PEM or DER files, relative to the policy file)
    root_sha256 = ["9f2c…"]               # extra roots pinned by SHA-256 fingerprint (certificate taken from
                                          # the quote's own chain when its fingerprint matches)

    [tcb]
    accepted_statuses = ["UpToDate", "SWHardeningNeeded"]   # the default
    rejected_advisories = ["INTEL-SA-00615"]                # default none
    allow_debug = false                                     # the default

    [enclave]                             # reference values: mrenclave and/or (mrsigner + isv_prod_id)
    mrenclave = ["33d8…"]                 # allow-list
    mrsigner = ["815f…"]                  # allow-list of signers
    isv_prod_id = 0                       # required with mrsigner
    min_isv_svn = 0                       # default 0

    [nonce]
    lifetime_seconds = 300                # default 300

Simulated roots are never trusted by default: a policy must list them. The policy **identifier** is
``"sha256:" + SHA-256`` of its canonical form (:meth:`Policy.canonical`: sorted JSON of the normalised values,
roots as fingerprints), so two files meaning the same policy have the same id; it is recorded with every result.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from sgx_iot.errors import FormatError
from sgx_iot.sgx.tcb import VERIFIABLE_TCB_STATUSES

#: TCB statuses a quote can verify with (``Revoked`` can never be accepted).
TCB_STATUSES = frozenset(VERIFIABLE_TCB_STATUSES)
DEFAULT_ACCEPTED_STATUSES = frozenset({"UpToDate", "SWHardeningNeeded"})
DEFAULT_NONCE_LIFETIME = 300
MAX_NONCE_LIFETIME = 7 * 24 * 3600
MAX_POLICY_BYTES = 1024 * 1024

#: SHA-256 fingerprint of Intel's "Intel SGX Root CA" (P-256, 2018-05-21 → 2049-12-31).
INTEL_SGX_ROOT_CA_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"

# Intel SGX Root CA, DER, base64. Pinned here rather than read from any quote or collateral, which whoever hands
# us evidence controls. The fingerprint above is checked when it is loaded.
_INTEL_SGX_ROOT_CA_DER_B64 = (
    "MIICjzCCAjSgAwIBAgIUImUM1lqdNInzg7SVUr9QGzknBqwwCgYIKoZIzj0EAwIwaDEaMBgGA1UEAwwRSW50ZWwgU0dYIFJvb3Qg"
    "Q0ExGjAYBgNVBAoMEUludGVsIENvcnBvcmF0aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJBgNVBAYT"
    "AlVTMB4XDTE4MDUyMTEwNDUxMFoXDTQ5MTIzMTIzNTk1OVowaDEaMBgGA1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoM"
    "EUludGVsIENvcnBvcmF0aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJBgNVBAYTAlVTMFkwEwYHKoZI"
    "zj0CAQYIKoZIzj0DAQcDQgAEC6nEwMDIYZOj/iPWsCzaEKi71OiOSLRFhWGjbnBVJfVnkY4u3IjkDYYL0MxO4mqsyYjlBalTVYxF"
    "P2sJBK5zlKOBuzCBuDAfBgNVHSMEGDAWgBQiZQzWWp00ifODtJVSv1AbOScGrDBSBgNVHR8ESzBJMEegRaBDhkFodHRwczovL2Nl"
    "cnRpZmljYXRlcy50cnVzdGVkc2VydmljZXMuaW50ZWwuY29tL0ludGVsU0dYUm9vdENBLmRlcjAdBgNVHQ4EFgQUImUM1lqdNInz"
    "g7SVUr9QGzknBqwwDgYDVR0PAQH/BAQDAgEGMBIGA1UdEwEB/wQIMAYBAf8CAQEwCgYIKoZIzj0EAwIDSQAwRgIhAOW/5QkR+S9C"
    "iSDcNoowLuPRLsWGf/Yi7GSX94BgwTwgAiEA4J0lrHoMs+Xo5o/sX6O9QWxHRAvZUGOdRQ7cvqRXaqI="
)


@functools.cache
def intel_sgx_root_ca_der() -> bytes:
    """The DER bytes of Intel's SGX Root CA, checked against :data:`INTEL_SGX_ROOT_CA_SHA256`."""
    der = base64.b64decode(_INTEL_SGX_ROOT_CA_DER_B64)
    if hashlib.sha256(der).hexdigest() != INTEL_SGX_ROOT_CA_SHA256:  # pragma: no cover - corrupted install
        raise RuntimeError("the built-in Intel SGX Root CA does not match its pinned fingerprint")
    return der


@dataclass(frozen=True)
class TrustRoot:
    """A root CA the policy trusts: its SHA-256 fingerprint and, when known, its DER bytes.

    ``der`` is ``None`` for a root pinned only by fingerprint: the appraisal then takes the root certificate
    from the quote's certification chain if, and only if, its fingerprint matches.
    """

    sha256: str
    der: bytes | None = None
    name: str = ""

    @classmethod
    def from_der(cls, der: bytes, name: str = "") -> TrustRoot:
        """A root from its DER certificate."""
        return cls(hashlib.sha256(der).hexdigest(), der, name)


INTEL_ROOT = TrustRoot(INTEL_SGX_ROOT_CA_SHA256, None, "Intel SGX Root CA")


@dataclass(frozen=True)
class Policy:
    """An appraisal policy (see the module docstring for the file format). Immutable; compare by :attr:`id`."""

    mrenclaves: frozenset[bytes] = frozenset()
    mrsigners: frozenset[bytes] = frozenset()
    isv_prod_id: int | None = None
    min_isv_svn: int = 0
    trust_intel: bool = True
    roots: tuple[TrustRoot, ...] = ()
    accepted_tcb_statuses: frozenset[str] = DEFAULT_ACCEPTED_STATUSES
    rejected_advisories: frozenset[str] = frozenset()
    allow_debug: bool = False
    nonce_lifetime: int = DEFAULT_NONCE_LIFETIME
    _id: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _validate(self)
        digest = hashlib.sha256(json.dumps(self.canonical(), sort_keys=True, separators=(",", ":")).encode())
        object.__setattr__(self, "_id", "sha256:" + digest.hexdigest())

    @property
    def id(self) -> str:
        """``"sha256:<hex>"`` of the canonical form: the same for every file that means this policy."""
        return self._id

    def trusted_roots(self) -> tuple[TrustRoot, ...]:
        """Every root this policy trusts, Intel's first when enabled (Intel's with its built-in DER)."""
        intel = (TrustRoot(INTEL_SGX_ROOT_CA_SHA256, intel_sgx_root_ca_der(), INTEL_ROOT.name),)
        return (intel if self.trust_intel else ()) + self.roots

    def canonical(self) -> dict[str, Any]:
        """The normalised content as a JSON-ready dict (the input of :attr:`id`)."""
        return {
            "format": "sgx-iot-policy/1",
            "trust": {"intel": self.trust_intel, "root_sha256": sorted({r.sha256 for r in self.roots})},
            "tcb": {
                "accepted_statuses": sorted(self.accepted_tcb_statuses),
                "rejected_advisories": sorted(self.rejected_advisories),
                "allow_debug": self.allow_debug,
            },
            "enclave": {
                "mrenclave": sorted(m.hex() for m in self.mrenclaves),
                "mrsigner": sorted(m.hex() for m in self.mrsigners),
                "isv_prod_id": self.isv_prod_id,
                "min_isv_svn": self.min_isv_svn,
            },
            "nonce": {"lifetime_seconds": self.nonce_lifetime},
        }

    def to_toml(self) -> str:
        """A TOML text that loads back to an equal policy (roots written as fingerprints)."""

        def strings(values: Iterable[str]) -> str:
            return "[" + ", ".join(json.dumps(v) for v in sorted(values)) + "]"

        c = self.canonical()
        lines = [
            "# sgx-iot appraisal policy (id " + self.id + ")",
            "[trust]",
            f"intel = {_bool(self.trust_intel)}",
            f"root_sha256 = {strings(c['trust']['root_sha256'])}",
            "",
            "[tcb]",
            f"accepted_statuses = {strings(self.accepted_tcb_statuses)}",
            f"rejected_advisories = {strings(self.rejected_advisories)}",
            f"allow_debug = {_bool(self.allow_debug)}",
            "",
            "[enclave]",
            f"mrenclave = {strings(c['enclave']['mrenclave'])}",
            f"mrsigner = {strings(c['enclave']['mrsigner'])}",
        ]
        if self.isv_prod_id is not None:
            lines.append(f"isv_prod_id = {self.isv_prod_id}")
        lines += [f"min_isv_svn = {self.min_isv_svn}", "", "[nonce]", f"lifetime_seconds = {self.nonce_lifetime}", ""]
        return "\n".join(lines)

    @classmethod
    def from_toml(cls, text: str | bytes, *, base_dir: Path | None = None) -> Policy:
        """Parse policy TOML text; files named in ``trust.roots`` are relative to ``base_dir`` (default cwd)."""
        if isinstance(text, bytes):
            if len(text) > MAX_POLICY_BYTES:
                raise FormatError("policy", "(document)", None, f"larger than {MAX_POLICY_BYTES} bytes")
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                raise FormatError("policy", "(document)", None, "not UTF-8 text") from None
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise FormatError("policy", "(document)", None, f"not valid TOML: {exc}") from None
        return cls.from_dict(doc, base_dir=base_dir)

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Read and parse a policy file (``FormatError`` if bad; ``OSError`` if unreadable)."""
        p = Path(path)
        return cls.from_toml(p.read_bytes(), base_dir=p.parent)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], *, base_dir: Path | None = None) -> Policy:
        """Build a policy from the parsed TOML tables (see the module docstring)."""
        r = _Reader(doc, "")
        trust, tcb, enclave, nonce = (r.table(name) for name in ("trust", "tcb", "enclave", "nonce"))
        r.done()
        roots = [_root_from_file(p, (base_dir or Path.cwd()), f"trust.roots[{i}]")
                 for i, p in enumerate(trust.str_list("roots"))]
        roots += [TrustRoot(h, None, "") for h in trust.hex_list("root_sha256", 32)]
        trust_intel = trust.bool("intel", True)
        trust.done()
        accepted = tcb.str_list("accepted_statuses", sorted(DEFAULT_ACCEPTED_STATUSES))
        for status in accepted:
            if status not in TCB_STATUSES:
                hint = "a Revoked platform is never accepted" if status == "Revoked" else f"expected one of {sorted(TCB_STATUSES)}"
                raise FormatError("policy", "tcb.accepted_statuses", None, f"{status!r} is not acceptable: {hint}")
        rejected = tcb.str_list("rejected_advisories")
        allow_debug = tcb.bool("allow_debug", False)
        tcb.done()
        mrenclaves = enclave.hex_list("mrenclave", 32)
        mrsigners = enclave.hex_list("mrsigner", 32)
        isv_prod_id = enclave.int("isv_prod_id", None, 0, 0xFFFF)
        min_isv_svn = enclave.int("min_isv_svn", 0, 0, 0xFFFF)
        enclave.done()
        lifetime = nonce.int("lifetime_seconds", DEFAULT_NONCE_LIFETIME, 1, MAX_NONCE_LIFETIME)
        nonce.done()
        return cls(
            mrenclaves=frozenset(bytes.fromhex(h) for h in mrenclaves),
            mrsigners=frozenset(bytes.fromhex(h) for h in mrsigners),
            isv_prod_id=isv_prod_id,
            min_isv_svn=min_isv_svn if min_isv_svn is not None else 0,
            trust_intel=trust_intel,
            roots=tuple(roots),
            accepted_tcb_statuses=frozenset(accepted),
            rejected_advisories=frozenset(rejected),
            allow_debug=allow_debug,
            nonce_lifetime=lifetime if lifetime is not None else DEFAULT_NONCE_LIFETIME,
        )


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _validate(p: Policy) -> None:
    """Invariants for policies built in Python as well as from files."""

    def bad(field_name: str, reason: str) -> FormatError:
        return FormatError("policy", field_name, None, reason)

    if not p.mrenclaves and not p.mrsigners:
        raise bad("enclave", "no reference values: give an mrenclave allow-list and/or mrsigner + isv_prod_id "
                             "(a policy without them would accept any enclave)")
    if p.mrsigners and p.isv_prod_id is None:
        raise bad("enclave.isv_prod_id", "required with mrsigner (a signer may sign several products)")
    for name, values in (("enclave.mrenclave", p.mrenclaves), ("enclave.mrsigner", p.mrsigners)):
        if any(len(v) != 32 for v in values):
            raise bad(name, "each value must be 32 bytes (64 hex digits)")
    if not p.accepted_tcb_statuses <= TCB_STATUSES:
        raise bad("tcb.accepted_statuses", f"unknown or unacceptable status; expected some of {sorted(TCB_STATUSES)}")
    if not p.accepted_tcb_statuses:
        raise bad("tcb.accepted_statuses", "must accept at least one status")
    if not 1 <= p.nonce_lifetime <= MAX_NONCE_LIFETIME:
        raise bad("nonce.lifetime_seconds", f"must be between 1 and {MAX_NONCE_LIFETIME}")
    if not p.trust_intel and not p.roots:
        raise bad("trust", "no trust root: set intel = true or list roots / root_sha256")


def _root_from_file(name: str, base_dir: Path, key: str) -> TrustRoot:
    path = Path(name) if Path(name).is_absolute() else base_dir / name
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FormatError("policy", key, None, f"cannot read root certificate {path}: {exc.strerror or exc}") from None
    try:
        cert = x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    except ValueError:
        raise FormatError("policy", key, None, f"{path} is not a PEM or DER X.509 certificate") from None
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return TrustRoot.from_der(cert.public_bytes(Encoding.DER), str(cns[0].value) if cns else str(path))


class _Reader:
    """Typed, strict access to one TOML table; every error names the dotted key."""

    def __init__(self, table: Any, prefix: str) -> None:
        if not isinstance(table, Mapping):
            raise FormatError("policy", prefix.rstrip(".") or "(document)", None, "must be a table")
        self._table = table
        self._prefix = prefix
        self._seen: set[str] = set()

    def _get(self, key: str) -> Any:
        self._seen.add(key)
        return self._table.get(key)

    def _bad(self, key: str, reason: str) -> FormatError:
        return FormatError("policy", self._prefix + key, None, reason)

    def table(self, key: str) -> _Reader:
        value = self._get(key)
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise self._bad(key, "must be a table ([" + self._prefix + key + "])")
        return _Reader(value, self._prefix + key + ".")

    def bool(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._bad(key, f"must be true or false, got {value!r}")
        return value

    def int(self, key: str, default: int | None, low: int, high: int) -> int | None:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(key, f"must be an integer, got {value!r}")
        if not low <= value <= high:
            raise self._bad(key, f"must be between {low} and {high}, got {value}")
        return value

    def str_list(self, key: str, default: list[str] | None = None) -> list[str]:
        value = self._get(key)
        if value is None:
            return list(default or [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self._bad(key, "must be a list of non-empty strings")
        return list(value)

    def hex_list(self, key: str, size: int) -> list[str]:
        out = []
        for i, item in enumerate(self.str_list(key)):
            text = item.lower().removeprefix("0x")
            try:
                raw = bytes.fromhex(text)
            except ValueError:
                raise self._bad(f"{key}[{i}]", f"{item!r} is not hexadecimal") from None
            if len(raw) != size:
                raise self._bad(f"{key}[{i}]", f"must be {size} bytes ({2 * size} hex digits), got {len(raw)} bytes")
            out.append(raw.hex())
        return out

    def done(self) -> None:
        unknown = sorted(set(self._table) - self._seen)
        if unknown:
            raise self._bad(unknown[0], f"unknown key (allowed here: {', '.join(sorted(self._seen))})")
