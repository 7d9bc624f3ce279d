"""Signing the enclave: the author's RSA-3072 (e=3) key and the SIGSTRUCT made from the image measurement.

``sgx-iot enclave keygen`` and ``sgx-iot enclave sign`` call these. The SIGSTRUCT takes ENCLAVEHASH from
:func:`sgx_iot.enclave.image.build` and ISVPRODID, ISVSVN, MISCSELECT/MASK, ATTRIBUTES and ATTRIBUTEMASK from the
same tree's ``enclave.toml``, so signer, loader and auditor agree by construction.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sgx_iot._fs import atomic_write
from sgx_iot.enclave.image import EnclaveBuild, build
from sgx_iot.errors import UsageError
from sgx_iot.sgx.sigstruct import EXPONENT, Sigstruct, generate_signing_key

_MAX_KEY_FILE = 64 * 1024


def write_signing_key(path: Path, *, force: bool = False) -> rsa.RSAPrivateKey:
    """Generate an enclave signing key and write it as unencrypted PKCS#8 PEM (mode 0600).

    Refuses (``UsageError``) to overwrite an existing file unless ``force``: losing a signing key means sealed keys
    bound to its MRSIGNER can no longer be unsealed by newly signed enclaves.
    """
    path = Path(path)
    if path.exists() and not force:
        raise UsageError(f"{path} already exists; choose another path or pass --force to overwrite it (enclaves "
                         "signed with the old key will then have another MRSIGNER)")
    key = generate_signing_key()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())  # fmt: skip
    atomic_write(path, pem, mode=0o600)
    return key


def load_signing_key(path: Path) -> rsa.RSAPrivateKey:
    """An RSA-3072 e=3 private key from a PEM (or DER) file; ``UsageError`` saying what is wrong otherwise."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_KEY_FILE + 1)
    except FileNotFoundError:
        raise UsageError(f"the signing key {path} does not exist; create one with `sgx-iot enclave keygen --out "
                         f"{path}`") from None
    except OSError as exc:
        raise UsageError(f"cannot read the signing key {path}: {exc.strerror or exc}") from None
    try:
        loader = serialization.load_pem_private_key if b"-----BEGIN" in data else serialization.load_der_private_key
        key = loader(data, password=None)
    except TypeError:
        raise UsageError(f"{path} is an encrypted private key; give an unencrypted RSA-3072 key (e=3), e.g. from "
                         "`sgx-iot enclave keygen`") from None
    except ValueError:
        raise UsageError(f"{path} is not a private key in PEM or DER; create one with `sgx-iot enclave keygen`"
                         ) from None
    if (not isinstance(key, rsa.RSAPrivateKey) or key.key_size != 3072
            or key.public_key().public_numbers().e != EXPONENT):
        raise UsageError(f"{path} is not an RSA-3072 key with public exponent 3, as SGX enclave signing requires; "
                         "create one with `sgx-iot enclave keygen`")
    return key


def signing_date() -> datetime.date:
    """The SIGSTRUCT date: ``$SOURCE_DATE_EPOCH`` (reproducible builds) if set, else today (UTC)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            return datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc).date()
        except (ValueError, OverflowError, OSError):
            raise UsageError(f"SOURCE_DATE_EPOCH={epoch!r} is not a Unix time") from None
    return datetime.datetime.now(datetime.timezone.utc).date()


def sign_enclave(key: rsa.RSAPrivateKey, source_root: Path, *, date: datetime.date | None = None,
                 enclave: EnclaveBuild | None = None) -> Sigstruct:  # fmt: skip
    """The signed SIGSTRUCT of the enclave built from ``source_root`` (or of ``enclave`` if already built)."""
    built = enclave if enclave is not None else build(source_root)
    config = built.config
    unsigned = Sigstruct.build(
        enclave_hash=built.mrenclave,
        isv_prod_id=config.isv_prod_id,
        isv_svn=config.isv_svn,
        attributes=config.attributes,
        attribute_mask=config.attribute_mask,
        misc_select=config.misc_select,
        misc_mask=config.misc_mask,
        date=date or signing_date(),
        release=False,
    )
    return unsigned.sign(key)


def write_sigstruct(sigstruct: Sigstruct, path: Path) -> None:
    """Write the 1808 SIGSTRUCT bytes atomically (mode 0644: it is public)."""
    atomic_write(path, sigstruct.to_bytes(), mode=0o644)
