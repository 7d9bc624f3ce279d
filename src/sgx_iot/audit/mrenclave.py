"""MRENCLAVE from source alone (``sgx-iot audit mrenclave --src DIR|URL[@rev]``).

* sgx-iot's own enclave: the source tree defines the enclave image, so MRENCLAVE needs nothing else.
* An Intel SGX SDK enclave: its MRENCLAVE also covers the metadata (heap, stack, TCS layout, global data
  template) that only signing creates, so the signed enclave is needed: its metadata is replayed over the
  enclave rebuilt by the source's recipe (or over ``unsigned``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from sgx_iot.audit._inputs import Input, read_input
from sgx_iot.audit.recipe import KIND_SDK, KIND_SGX_IOT, load_recipe, run_build
from sgx_iot.audit.source import checkout
from sgx_iot.errors import UsageError
from sgx_iot.sgx.sdk_enclave import SdkEnclave, replay


@dataclass(frozen=True)
class SourceMeasurement:
    """MRENCLAVE built from a source, with what it was built from."""

    mrenclave: bytes
    kind: str
    source: str
    commit: str | None = None
    isv_prod_id: int | None = None
    isv_svn: int | None = None

    def provenance(self) -> str:
        """``"source URL (commit abc…)"``."""
        return f"source {self.source}" + (f" (commit {self.commit})" if self.commit else "")

    def identity(self) -> dict[str, Any]:
        """What else is known besides MRENCLAVE: kind, commit, ISVPRODID, ISVSVN (JSON-ready)."""
        return {"kind": self.kind, "commit": self.commit, "isv_prod_id": self.isv_prod_id, "isv_svn": self.isv_svn}

    def note(self) -> str:
        """One sentence on how the value was obtained."""
        if self.kind == KIND_SGX_IOT:
            return "measured from the source files (sgx-iot enclave image); no build step"
        return "the signed enclave's metadata replayed over the enclave rebuilt from source"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"mrenclave": self.mrenclave.hex(), "source": self.source, **self.identity()}


def mrenclave_from_source(
    source: str | os.PathLike[str],
    *,
    signed_enclave: Input | None = None,
    unsigned: Input | None = None,
    build_timeout: float | None = None,
) -> SourceMeasurement:
    """MRENCLAVE of the enclave built from ``source`` (a folder or ``URL[@rev]``).

    For an SDK enclave ``signed_enclave`` is required (its metadata is replayed over the rebuilt file); ``unsigned``
    skips the build. Raises ``UsageError`` / ``FormatError`` / ``BuildError`` (exit 2) when it cannot be measured.
    """
    from sgx_iot.enclave.image import build, find_source_root

    with checkout(str(source)) as tree:
        recipe = load_recipe(tree.root)
        if recipe.kind == KIND_SGX_IOT:
            if signed_enclave is not None or unsigned is not None:
                raise UsageError("sgx-iot's own enclave is measured from its source alone; use `audit verify` to "
                                 "compare it with a SIGSTRUCT")
            built = build(find_source_root(tree.root))
            return SourceMeasurement(built.mrenclave, KIND_SGX_IOT, str(source), tree.commit,
                                     built.config.isv_prod_id, built.config.isv_svn)
        assert recipe.kind == KIND_SDK and recipe.build is not None
        if signed_enclave is None:
            raise UsageError(
                "an Intel SGX SDK enclave's MRENCLAVE covers metadata that only signing creates; give the signed "
                "enclave too (`sgx-iot audit verify --src ... --signed-enclave FILE`)")
        signed = SdkEnclave.parse(read_input(signed_enclave, "signed enclave"))
        if not signed.signed:
            raise UsageError("the signed enclave has no metadata (it is an unsigned build); give the signed file")
        if unsigned is not None:
            rebuilt = read_input(unsigned, "unsigned enclave")
        else:
            recipe_build = recipe.build
            if build_timeout is not None:
                recipe_build = dataclasses.replace(recipe_build, timeout=build_timeout)
            rebuilt = run_build(recipe_build, tree.root).read_bytes()
        sigstruct = signed.sigstruct
        return SourceMeasurement(replay(signed.metadata[0], rebuilt), KIND_SDK, str(source), tree.commit,
                                 sigstruct.isv_prod_id, sigstruct.isv_svn)
