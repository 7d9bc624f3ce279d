"""Helpers for the enclave and gateway tests (tests/test_enclave_*.py, tests/test_gateway_*.py)."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from sgx_iot.enclave import image
from sgx_iot.enclave.program import EnclaveProgram
from sgx_iot.enclave.protocol import STATUS_ERROR, Message, decode_body, decode_error, encode_body
from sgx_iot.platform.sim import SimPlatform
from sgx_iot.sgx.sigstruct import Sigstruct, generate_signing_key

SRC = Path(__file__).resolve().parent.parent / "src"


@functools.cache
def signing_key(index: int = 0) -> rsa.RSAPrivateKey:
    """RSA-3072 e=3 enclave signing keys, made once per test session."""
    return generate_signing_key()


@functools.cache
def installed_build() -> image.EnclaveBuild:
    return image.build(SRC)


def sigstruct_for(built: image.EnclaveBuild, key_index: int = 0, **overrides: object) -> Sigstruct:
    """What `sgx-iot enclave sign` makes for ``built`` (``overrides`` replace identity fields)."""
    config = built.config
    fields: dict[str, object] = {
        "enclave_hash": built.mrenclave, "isv_prod_id": config.isv_prod_id, "isv_svn": config.isv_svn,
        "attributes": config.attributes, "attribute_mask": config.attribute_mask,
        "misc_select": config.misc_select, "misc_mask": config.misc_mask,
    }  # fmt: skip
    fields.update(overrides)
    return Sigstruct.build(release=False, **fields).sign(signing_key(key_index))  # type: ignore[arg-type]


def copy_tree(dest: Path) -> Path:
    """A copy of ``src/sgx_iot`` under ``dest`` (without caches); returns ``dest`` (the new source root)."""
    shutil.copytree(SRC / "sgx_iot", dest / "sgx_iot", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def launch_program(platform: Path, built: image.EnclaveBuild | None = None, *, key_index: int = 0,
                   debug: bool = False, **overrides: object) -> EnclaveProgram:  # fmt: skip
    """The trusted program on a runtime EINITed in-process (no enclave process; for fast handler tests)."""
    built = built or installed_build()
    runtime = SimPlatform(platform).launch(built.image, sigstruct_for(built, key_index, **overrides), debug=debug)
    return EnclaveProgram(runtime)


def ecall(program: EnclaveProgram, op: int, *items: bytes) -> Message:
    """One request through the program's dispatcher, decoded."""
    return decode_body(program.handle(encode_body(op, list(items))))


def ecall_error(program: EnclaveProgram, op: int, *items: bytes) -> tuple[str, str]:
    """``(code, message)`` of a request that must be refused."""
    reply = ecall(program, op, *items)
    assert reply.kind == STATUS_ERROR, "the enclave accepted a request it should refuse"
    return decode_error(reply.items)

