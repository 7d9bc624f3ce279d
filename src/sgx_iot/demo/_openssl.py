"""Checking a detached file signature the way the seed's demo did: ``openssl dgst -sha256 -verify``.

When the ``openssl`` binary is not installed, the same check is made with ``cryptography`` and the outcome says so.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

_TIMEOUT = 30


def openssl_command(public_key: Path, signature: Path, data: Path) -> list[str] | None:
    """The verification command line, or None when ``openssl`` is not installed."""
    binary = shutil.which("openssl")
    if binary is None:
        return None
    return [binary, "dgst", "-sha256", "-verify", str(public_key), "-signature", str(signature), str(data)]


def verify_file_signature(public_key: Path, signature: Path, data: Path) -> tuple[bool, str]:
    """``(verified, what the verifier said)`` for the DER ECDSA/SHA-256 ``signature`` of the file ``data``."""
    command = openssl_command(public_key, signature, data)
    if command is not None:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, f"openssl could not run: {exc}"
        output = done.stdout.strip() or done.stderr.strip()
        said = output.splitlines()[0] if output else f"exit code {done.returncode}"
        return done.returncode == 0, f"openssl: {said}"
    key = serialization.load_pem_public_key(public_key.read_bytes())
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return False, "the public key is not an EC key"
    try:
        key.verify(signature.read_bytes(), data.read_bytes(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False, "Verification failure (checked with cryptography; openssl is not installed)"
    return True, "Verified OK (checked with cryptography; openssl is not installed)"
