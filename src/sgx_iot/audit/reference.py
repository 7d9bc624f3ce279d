"""Reference values: what the auditor publishes so the verifier trusts exactly the audited build.

The values go into the ``[enclave]`` table of the verifier's policy (:mod:`sgx_iot.verify.policy`)::

    # Reference values written by sgx-iot audit reference: source https://…/sgx-iot.git@v1 (commit 4b515ed…)
    [enclave]
    mrenclave = ["<MRENCLAVE built from source>"]
    mrsigner = ["<MRSIGNER of the signed enclave>"]
    isv_prod_id = 0
    min_isv_svn = 1

The policy checks each of them (MRENCLAVE in the allow-list **and** MRSIGNER allowed **and** ISVPRODID equal
**and** ISVSVN at least ``min_isv_svn``). The MRSIGNER is written only when a signed enclave was audited: the
source alone does not say who signs. Writing into an existing policy file replaces its ``[enclave]`` table and
keeps the rest of the file as it is; the result is parsed back as a policy before it replaces the file.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sgx_iot._fs import atomic_write_text
from sgx_iot.audit._inputs import Input
from sgx_iot.audit.mrenclave import mrenclave_from_source
from sgx_iot.audit.verify import verify_mrenclave
from sgx_iot.errors import FormatError, UsageError, VerificationError
from sgx_iot.verify.policy import Policy

COMMENT_PREFIX = "# Reference values written by sgx-iot audit reference"
_TABLE_HEADER = re.compile(r"^\s*\[\s*enclave\s*\]\s*(#.*)?$")
_ANY_HEADER = re.compile(r"^\s*\[")


@dataclass(frozen=True)
class ReferenceValues:
    """The audited enclave's identity: MRENCLAVE (from source), and MRSIGNER / ISVPRODID / ISVSVN when known."""

    mrenclave: bytes
    mrsigner: bytes | None = None
    isv_prod_id: int | None = None
    isv_svn: int | None = None
    provenance: str = ""

    def to_toml(self) -> str:
        """The policy's ``[enclave]`` table (with a provenance comment), ending with a newline."""
        lines = [f"{COMMENT_PREFIX}: {self.provenance}" if self.provenance else COMMENT_PREFIX, "[enclave]",
                 f'mrenclave = ["{self.mrenclave.hex()}"]']
        if self.mrsigner is not None:
            lines.append(f'mrsigner = ["{self.mrsigner.hex()}"]')
        if self.isv_prod_id is not None:
            lines.append(f"isv_prod_id = {self.isv_prod_id}")
        if self.isv_svn is not None:
            lines.append(f"min_isv_svn = {self.isv_svn}")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"mrenclave": self.mrenclave.hex(), "mrsigner": self.mrsigner.hex() if self.mrsigner else None,
                "isv_prod_id": self.isv_prod_id, "min_isv_svn": self.isv_svn, "provenance": self.provenance}


def reference_values(
    source: str | os.PathLike[str] | None,
    signed_enclave: Input | None = None,
    *,
    unsigned: Input | None = None,
    enclave_config: Input | None = None,
    build_timeout: float | None = None,
) -> ReferenceValues:
    """The reference values of the enclave built from ``source``.

    With ``signed_enclave``, the full reproducibility check runs first (:func:`verify_mrenclave`, no evidence) and
    values are returned only when it passes — otherwise ``VerificationError("REPRODUCIBILITY_FAILED")`` with the
    first problem (exit 1); the SIGSTRUCT then gives MRSIGNER, ISVPRODID and ISVSVN. Without it, only sgx-iot's own
    enclave can be described (MRENCLAVE from source, ISVPRODID / ISVSVN from its ``enclave.toml``, no MRSIGNER).
    """
    if signed_enclave is None:
        if unsigned is not None:
            raise UsageError("an unsigned SDK enclave needs the signed one (--signed-enclave) to be measured")
        if source is None:
            raise UsageError("give the source (--src)")
        measured = mrenclave_from_source(source, build_timeout=build_timeout)
        return ReferenceValues(measured.mrenclave, None, measured.isv_prod_id, measured.isv_svn,
                               measured.provenance())
    report = verify_mrenclave(source, signed_enclave, unsigned=unsigned, enclave_config=enclave_config,
                              build_timeout=build_timeout)
    if not report:
        raise VerificationError("REPRODUCIBILITY_FAILED", "the signed enclave is not reproduced by the source, so no "
                                f"reference values were written: {report.problems()[0]}")
    mrenclave = report.mrenclave.get("sigstruct")
    mrsigner = report.mrsigner.get("sigstruct")
    prod_id, svn = report.isv_prod_id.get("sigstruct"), report.isv_svn.get("sigstruct")
    assert isinstance(mrenclave, bytes) and isinstance(mrsigner, bytes)
    assert isinstance(prod_id, int) and isinstance(svn, int)
    return ReferenceValues(mrenclave, mrsigner, prod_id, svn, _provenance(report.source))


def merge_into_policy(existing: str | None, values: ReferenceValues) -> str:
    """The policy text with its ``[enclave]`` table replaced by ``values`` (or the table alone, for no file).

    Raises ``UsageError`` when the existing file defines ``enclave`` some other way than a plain ``[enclave]``
    table (dotted keys, inline table), which cannot be replaced without rewriting the file.
    """
    section = values.to_toml()
    if existing is None or not existing.strip():
        return section
    lines = existing.splitlines()
    start = next((i for i, line in enumerate(lines) if _TABLE_HEADER.match(line)), None)
    if start is None:
        try:
            doc = tomllib.loads(existing)
        except tomllib.TOMLDecodeError as exc:
            raise FormatError("policy", "(document)", None, f"not valid TOML: {exc}") from None
        except RecursionError:
            raise FormatError("policy", "(document)", None, "not valid TOML: nested too deeply") from None
        if "enclave" in doc:
            raise UsageError("the policy defines `enclave` without an [enclave] table header; edit it by hand or "
                             "write the reference values to a new file")
        return existing.rstrip("\n") + "\n\n" + section
    end = next((j for j in range(start + 1, len(lines)) if _ANY_HEADER.match(lines[j])), len(lines))
    if start > 0 and lines[start - 1].startswith(COMMENT_PREFIX):
        start -= 1
    head = "\n".join(lines[:start])
    tail = "\n".join(lines[end:])
    return (head + "\n" if head else "") + section + ("\n" + tail + "\n" if tail else "")


def write_reference(path: str | os.PathLike[str], values: ReferenceValues) -> Policy:
    """Write ``values`` into the policy file at ``path`` (created, or its ``[enclave]`` table replaced), atomically.

    The new text is parsed as a policy first (``FormatError`` if the existing file is not UTF-8 text or the rest of
    it is not valid) and must hold exactly these reference values. Returns the policy written.
    """
    target = Path(path)
    try:
        existing = target.read_text(encoding="utf-8") if target.exists() else None
    except UnicodeDecodeError as exc:
        raise FormatError("policy", "(document)", exc.start, f"{target} is not UTF-8 text, so not a policy file; "
                          "give another --out") from None
    text = merge_into_policy(existing, values)
    try:
        policy = Policy.from_toml(text, base_dir=target.parent)
    except RecursionError:  # tomllib's error for deep nesting, which Policy.from_toml lets through
        raise FormatError("policy", "(document)", None, "not valid TOML: nested too deeply") from None
    if policy.mrenclaves != frozenset({values.mrenclave}):  # pragma: no cover - guards merge_into_policy
        raise FormatError("policy", "enclave.mrenclave", None, "the merged file does not hold the audited MRENCLAVE")
    atomic_write_text(target, text, mode=0o644)
    return policy


def _provenance(source: Any) -> str:
    if not source:
        return ""
    parts = []
    if source.get("source"):
        parts.append(f"source {source['source']}")
    if source.get("commit"):
        parts.append(f"(commit {source['commit']})")
    if source.get("unsigned"):
        parts.append(f"rebuilt enclave {source['unsigned']}")
    return " ".join(parts)
