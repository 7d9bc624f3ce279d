"""The simulated platform's PKI, shaped like Intel's SGX PKI (SGX_FORMATS.md §8.2).

::

    sgx-iot SIMULATED SGX Root CA (self-signed, CA, pathlen 1)
     ├── sgx-iot SIMULATED SGX PCK Processor CA (CA, pathlen 0)
     │    └── sgx-iot SIMULATED SGX PCK Certificate (leaf, SGX extension 1.2.840.113741.1.13.1)
     └── sgx-iot SIMULATED SGX TCB Signing (leaf: signs TCB info and QE identity)

All keys are P-256 and every signature ECDSA-SHA256, with the extensions dcap-qvl's chain check expects
(BasicConstraints and KeyUsage critical, key identifiers, CRL distribution points, no extended key usage). The
subjects say "sgx-iot SIMULATED … not Intel", so nobody mistakes this root for Intel's: a verifier trusts it only
when configured to. CRL distribution points use the reserved ``.invalid`` domain: the CRLs come from the collateral.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sgx_iot.platform.sim import _der

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
"""Intel's SGX extension in PCK certificates."""

ORGANIZATION = "sgx-iot simulation (not Intel)"
ROOT_CN = "sgx-iot SIMULATED SGX Root CA"
PROCESSOR_CA_CN = "sgx-iot SIMULATED SGX PCK Processor CA"  # dcap-qvl picks ca=processor from "Processor"
PCK_CN = "sgx-iot SIMULATED SGX PCK Certificate"
TCB_SIGNING_CN = "sgx-iot SIMULATED SGX TCB Signing"

_CRL_BASE = "https://sgx-iot-simulation.invalid/sgx/certification/v4"
ROOT_CRL_URL = f"{_CRL_BASE}/rootcacrl"
PCK_CRL_URL = f"{_CRL_BASE}/pckcrl?ca=processor&encoding=der"

ROOT_NOT_AFTER = datetime.datetime(2049, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc)
"""Like Intel's root."""
_YEAR = datetime.timedelta(days=365)
_BACKDATE = datetime.timedelta(days=1)  # tolerate verifiers whose clock is a little behind


@dataclass(frozen=True)
class PckInfo:
    """What the PCK certificate's SGX extension states about the platform."""

    ppid: bytes
    cpu_svn: bytes
    pce_svn: int
    pce_id: bytes
    fmspc: bytes
    sgx_type: int = 0  # 0 = Standard

    def __post_init__(self) -> None:
        for name, size in (("ppid", 16), ("cpu_svn", 16), ("pce_id", 2), ("fmspc", 6)):
            if len(getattr(self, name)) != size:
                raise ValueError(f"PckInfo.{name} must be {size} bytes")
        # PCESVN is a u16, but dcap-qvl reads its DER INTEGER as at most two content bytes (values < 0x8000).
        if not 0 <= self.pce_svn <= 0x7FFF:
            raise ValueError("PckInfo.pce_svn must be between 0 and 32767")

    @property
    def tcb_components(self) -> list[int]:
        """The 16 SGX TCB component SVNs (component k is CPUSVN byte k)."""
        return list(self.cpu_svn)


def sgx_extension_value(info: PckInfo) -> bytes:
    """DER value of the SGX extension, in the order and encodings of Intel's PCK certificates."""
    base = SGX_EXTENSION_OID

    def entry(suffix: str, value: bytes) -> bytes:
        return _der.sequence(_der.oid(f"{base}.{suffix}"), value)

    components = [entry(f"2.{k + 1}", _der.integer(svn)) for k, svn in enumerate(info.tcb_components)]
    tcb = _der.sequence(
        _der.oid(f"{base}.2"),
        _der.sequence(
            *components,
            entry("2.17", _der.integer(info.pce_svn)),
            entry("2.18", _der.octet_string(info.cpu_svn)),
        ),
    )
    return _der.sequence(
        entry("1", _der.octet_string(info.ppid)),
        tcb,
        entry("3", _der.octet_string(info.pce_id)),
        entry("4", _der.octet_string(info.fmspc)),
        entry("5", _der.enumerated(info.sgx_type)),
    )


@dataclass(frozen=True)
class Pki:
    """Certificates and keys of one simulated platform. Keys never appear in ``repr``."""

    root_cert: x509.Certificate
    processor_cert: x509.Certificate
    pck_cert: x509.Certificate
    tcb_signing_cert: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey = field(repr=False)
    processor_key: ec.EllipticCurvePrivateKey = field(repr=False)
    pck_key: ec.EllipticCurvePrivateKey = field(repr=False)
    tcb_signing_key: ec.EllipticCurvePrivateKey = field(repr=False)

    def pck_chain_pem(self) -> str:
        """PCK leaf, Processor CA, root (what certification data type 5 carries)."""
        return pem_chain(self.pck_cert, self.processor_cert, self.root_cert)

    def tcb_issuer_chain_pem(self) -> str:
        """TCB signing certificate, root (issuer chain of TCB info and QE identity)."""
        return pem_chain(self.tcb_signing_cert, self.root_cert)

    def pck_crl_issuer_chain_pem(self) -> str:
        """Processor CA, root (issuer chain of the PCK CRL)."""
        return pem_chain(self.processor_cert, self.root_cert)

    def root_der(self) -> bytes:
        """The root CA certificate, DER."""
        return self.root_cert.public_bytes(serialization.Encoding.DER)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "SIMULATION ONLY - not for production trust"),
        ]
    )


def _ski(key: ec.EllipticCurvePrivateKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key())


def _issue(
    *,
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    ca_path_length: int | None,
    is_ca: bool,
    crl_url: str,
    extra: x509.UnrecognizedExtension | None = None,
) -> x509.Certificate:
    issuer_name = issuer.subject if issuer is not None else _name(subject)
    issuer_ski = _ski(issuer_key)
    usage = (
        x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        if is_ca
        else x509.KeyUsage(True, True, False, False, False, False, False, False, False)
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), False)
        .add_extension(
            x509.CRLDistributionPoints(
                [x509.DistributionPoint([x509.UniformResourceIdentifier(crl_url)], None, None, None)]
            ),
            False,
        )
        .add_extension(_ski(key), False)
        .add_extension(usage, True)
        .add_extension(x509.BasicConstraints(is_ca, ca_path_length if is_ca else None), True)
    )
    if extra is not None:
        builder = builder.add_extension(extra, False)
    return builder.sign(issuer_key, hashes.SHA256())


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def create_pki(info: PckInfo, now: datetime.datetime) -> Pki:
    """A fresh root, Processor CA, PCK certificate (stating ``info``) and TCB signing certificate."""
    start = now - _BACKDATE
    root_key, processor_key, pck_key, tcb_key = (_new_key() for _ in range(4))
    root = _issue(
        subject=ROOT_CN, key=root_key, issuer=None, issuer_key=root_key, not_before=start,
        not_after=ROOT_NOT_AFTER, ca_path_length=1, is_ca=True, crl_url=ROOT_CRL_URL,
    )  # fmt: skip
    processor = _issue(
        subject=PROCESSOR_CA_CN, key=processor_key, issuer=root, issuer_key=root_key, not_before=start,
        not_after=min(start + 15 * _YEAR, ROOT_NOT_AFTER), ca_path_length=0, is_ca=True, crl_url=ROOT_CRL_URL,
    )  # fmt: skip
    pck = issue_pck(info, pck_key, processor, processor_key, now)
    tcb_signing = _issue(
        subject=TCB_SIGNING_CN, key=tcb_key, issuer=root, issuer_key=root_key, not_before=start,
        not_after=min(start + 7 * _YEAR, ROOT_NOT_AFTER), ca_path_length=None, is_ca=False, crl_url=ROOT_CRL_URL,
    )  # fmt: skip
    return Pki(root, processor, pck, tcb_signing, root_key, processor_key, pck_key, tcb_key)


def issue_pck(
    info: PckInfo,
    pck_key: ec.EllipticCurvePrivateKey,
    processor: x509.Certificate,
    processor_key: ec.EllipticCurvePrivateKey,
    now: datetime.datetime,
) -> x509.Certificate:
    """A PCK certificate for ``pck_key`` stating ``info``, issued by the Processor CA (valid 7 years)."""
    start = now - _BACKDATE
    extension = x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_EXTENSION_OID), sgx_extension_value(info))
    return _issue(
        subject=PCK_CN, key=pck_key, issuer=processor, issuer_key=processor_key, not_before=start,
        not_after=min(start + 7 * _YEAR, processor.not_valid_after_utc), ca_path_length=None, is_ca=False,
        crl_url=PCK_CRL_URL, extra=extension,
    )  # fmt: skip


def build_crl(
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    revoked_serials: Iterable[int],
    this_update: datetime.datetime,
    next_update: datetime.datetime,
) -> bytes:
    """A DER CRL (v2, CRL number = ``this_update`` in Unix seconds, AKI) revoking ``revoked_serials``."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(int(this_update.timestamp())), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            ),
            False,
        )
    )
    for serial in revoked_serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(this_update).build()
        )
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def pem_chain(*certs: x509.Certificate) -> str:
    """Concatenated PEM certificates."""
    return "".join(cert.public_bytes(serialization.Encoding.PEM).decode("ascii") for cert in certs)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lowercase hex."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
