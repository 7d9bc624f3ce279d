"""``verify_mrenclave``: is the enclave that signed, and attested, built from the trusted source?

The sgx-iot counterpart of ``auditee.verify_mrenclave(source, signed_enclave, ias_report=...)``, without the SGX
SDK, docker or nix (they are used only when the source's own recipe asks for them), for both kinds of enclave:

* **Intel SGX SDK enclaves** (the signed enclave is an ELF ``*.signed.so``): the source's recipe rebuilds the
  unsigned enclave (or the caller gives an already rebuilt one, ``unsigned=``); the rebuilt file must equal the
  signed one outside the metadata note; the signed enclave's metadata is replayed over the rebuilt file (the
  MRENCLAVE *from source*) and over the signed file itself (*replayed*), next to its SIGSTRUCT's ENCLAVEHASH;
  the metadata is decoded and compared with the configuration XML.
* **sgx-iot's own enclave** (the signed enclave is the 1808-byte SIGSTRUCT the gateway runs with): the source
  tree defines the enclave image (:mod:`sgx_iot.enclave.image`), so MRENCLAVE comes with no build step; its
  ``enclave.toml`` gives ISVPRODID, ISVSVN, attributes and debug policy.

Then the evidence (IAS report, DCAP quote with or without collateral, sgx-iot evidence bundle) is checked and
its identity compared. Everything lands in a :class:`~sgx_iot.audit.report.ReproducibilityReport`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from sgx_iot.audit import _evidence
from sgx_iot.audit._inputs import Input, read_input, read_optional
from sgx_iot.audit.recipe import KIND_SDK, KIND_SGX_IOT, load_recipe, run_build
from sgx_iot.audit.report import (
    CONFIG,
    EVIDENCE,
    REPLAYED,
    SIGSTRUCT,
    SOURCE,
    AttributesCheck,
    Comparison,
    ConfigMismatch,
    FileDifference,
    ReproducibilityReport,
)
from sgx_iot.audit.source import checkout
from sgx_iot.errors import FormatError, UsageError, VerificationError
from sgx_iot.sgx.sdk_enclave import SdkEnclave, compare_outside_metadata, replay
from sgx_iot.sgx.sigstruct import Sigstruct

MAX_DIFFERENCES = 20
_ELF_MAGIC = b"\x7fELF"


def verify_mrenclave(
    source: str | os.PathLike[str] | None,
    signed_enclave: Input,
    *,
    ias_report: Input | None = None,
    quote: Input | None = None,
    collateral: Any = None,
    unsigned: Input | None = None,
    evidence: Input | None = None,
    now: int | None = None,
    enclave_config: Input | None = None,
    root_ca: Input | None = None,
    build_timeout: float | None = None,
) -> ReproducibilityReport:
    """Compare the MRENCLAVE built from ``source`` with ``signed_enclave`` and with the attestation evidence.

    ``source`` is a folder or ``URL[@rev]`` (see :mod:`sgx_iot.audit.source`); it may be ``None`` for an SDK
    enclave when ``unsigned`` (a rebuilt ``enclave.so``) is given. Evidence: at most one of ``ias_report``,
    ``quote`` (with optional ``collateral``: path, JSON text or ``QuoteCollateralV3``) and ``evidence`` (an
    sgx-iot evidence bundle). ``now`` (Unix seconds) is the time at which quotes and collateral are checked;
    ``root_ca`` (PEM/DER) replaces Intel's root for DCAP quotes, e.g. the simulated platform's.
    ``enclave_config`` overrides the configuration XML named by the source's recipe.

    Returns the report (truthy when everything matches). Raises ``UsageError`` / ``FormatError`` (exit 2) for
    unusable input: missing files, a source without recipe, a build that cannot run, files that do not parse.
    """
    signed = read_input(signed_enclave, "signed enclave")
    evidence_read = _evidence.read_any(
        ias_report=read_optional(ias_report, "IAS report"), quote=read_optional(quote, "quote"),
        evidence=read_optional(evidence, "evidence"), collateral=_collateral(collateral),
        root_ca=read_optional(root_ca, "root CA certificate"), now=now)
    if signed.startswith(_ELF_MAGIC):
        return _verify_sdk(source, signed, evidence_read, unsigned=unsigned, enclave_config=enclave_config,
                           build_timeout=build_timeout)
    if len(signed) == Sigstruct.SIZE:
        if unsigned is not None:
            raise UsageError("--unsigned is for Intel SGX SDK enclaves; sgx-iot's enclave is measured from --src")
        if source is None:
            raise UsageError("give the source (--src) of the sgx-iot enclave whose SIGSTRUCT this is")
        return _verify_sgx_iot(source, signed, evidence_read)
    raise FormatError("signed enclave", "(file)", 0, f"neither an SGX SDK enclave (ELF) nor a {Sigstruct.SIZE}-byte "
                      f"SIGSTRUCT ({len(signed)} bytes)")


def _verify_sdk(source: Any, signed: bytes, read: _evidence.ReadEvidence | None, *, unsigned: Input | None,
                enclave_config: Input | None, build_timeout: float | None) -> ReproducibilityReport:
    enclave = SdkEnclave.parse(signed)
    if not enclave.signed:
        raise UsageError("the signed enclave has no metadata (it is an unsigned build); give the signed file")
    sigstruct = enclave.sigstruct
    config_xml = read_optional(enclave_config, "enclave configuration")
    source_info: dict[str, Any] = {}
    if unsigned is not None:
        rebuilt = read_input(unsigned, "unsigned enclave")
        source_info["unsigned"] = "(bytes)" if isinstance(unsigned, bytes | bytearray) else str(unsigned)
        if source is not None and config_xml is None:
            with checkout(str(source)) as tree:
                recipe = load_recipe(tree.root)
                source_info.update(tree.to_dict(), recipe=recipe.to_dict())
                config_xml = _recipe_config(tree.root, recipe.enclave_config)
    elif source is None:
        raise UsageError("give the source (--src) or an already rebuilt unsigned enclave (--unsigned FILE)")
    else:
        with checkout(str(source)) as tree:
            recipe = load_recipe(tree.root)
            if recipe.kind != KIND_SDK or recipe.build is None:
                raise UsageError(f"{source} is sgx-iot's own enclave source, but the signed enclave is an SGX SDK "
                                 "enclave (ELF); give the SIGSTRUCT the gateway runs with instead")
            source_info.update(tree.to_dict(), recipe=recipe.to_dict())
            build = recipe.build
            if build_timeout is not None:
                build = dataclasses.replace(build, timeout=build_timeout)
            rebuilt = run_build(build, tree.root).read_bytes()
            if config_xml is None:
                config_xml = _recipe_config(tree.root, recipe.enclave_config)

    measurements = enclave.measure()
    primary = enclave.metadata[0]
    from_source = replay(primary, rebuilt)
    problems = [f"metadata blob {m.index} (version {m.version}) replays to {m.mrenclave.hex()}, not to its "
                f"SIGSTRUCT's {m.enclave_hash.hex()}" for m in measurements[1:] if not m.matches]
    differences = [_locate(enclave, d.start, d.end) for d in compare_outside_metadata(signed, rebuilt)]

    config_values: dict[str, Any] = {}
    mismatches: list[ConfigMismatch] = []
    notes: list[str] = []
    if config_xml is not None:
        config_values, mismatches, notes = _sdk_config(config_xml, primary)
    else:
        notes.append("no enclave configuration XML was given: the metadata was not compared with one")
    return _assemble(KIND_SDK, sigstruct, read, source_info, from_source=from_source,
                     replayed=measurements[0].mrenclave, config=config_values, mismatches=mismatches,
                     differences=differences, problems=problems, notes=notes)


def _verify_sgx_iot(source: Any, signed: bytes, read: _evidence.ReadEvidence | None) -> ReproducibilityReport:
    from sgx_iot.enclave.image import build, find_source_root

    sigstruct = Sigstruct.parse(signed)
    with checkout(str(source)) as tree:
        recipe = load_recipe(tree.root)
        if recipe.kind != KIND_SGX_IOT:
            raise UsageError(f"{source} holds an SGX SDK enclave recipe ({recipe.origin}), but the signed enclave is "
                             "a bare SIGSTRUCT; give the signed enclave file (*.signed.so)")
        built = build(find_source_root(tree.root))
        source_info: dict[str, Any] = {**tree.to_dict(), "recipe": recipe.to_dict()}
        from_source = built.mrenclave
    config = built.config
    mismatches = []
    for name, configured, signed_value in (
        ("attributes", config.attributes, sigstruct.attributes),
        ("attribute_mask", config.attribute_mask, sigstruct.attribute_mask),
        ("misc_select", config.misc_select, sigstruct.misc_select),
        ("misc_mask", config.misc_mask, sigstruct.misc_mask),
    ):
        if configured != signed_value:
            mismatches.append(ConfigMismatch(name, _plain(configured), _plain(signed_value)))
    values = {"isv_prod_id": config.isv_prod_id, "isv_svn": config.isv_svn, "debug": not config.disable_debug}
    return _assemble(KIND_SGX_IOT, sigstruct, read, source_info, from_source=from_source, replayed=None,
                     config=values, mismatches=mismatches, differences=[], problems=[],
                     notes=["sgx-iot's enclave is measured from its source files; the configuration compared is "
                            "enclave.toml, against the SIGSTRUCT (metadata column)"])


def _assemble(kind: str, sigstruct: Sigstruct, read: _evidence.ReadEvidence | None, source_info: dict[str, Any], *,
              from_source: bytes, replayed: bytes | None, config: dict[str, Any], mismatches: list[ConfigMismatch],
              differences: list[FileDifference], problems: list[str], notes: list[str]) -> ReproducibilityReport:
    try:
        sigstruct.verify()
        signature_error = None
    except VerificationError as exc:
        signature_error = str(exc)
    body = read.body if read is not None else None

    def values(**stated: Any) -> dict[str, Any]:
        return {party: value for party, value in stated.items() if value is not None}

    mrenclave = Comparison("MRENCLAVE", values(**{SOURCE: from_source, SIGSTRUCT: sigstruct.enclave_hash,
                                                  REPLAYED: replayed, EVIDENCE: body and body.mr_enclave}),
                           required=(SOURCE, SIGSTRUCT))
    mrsigner = Comparison("MRSIGNER", values(**{SIGSTRUCT: sigstruct.mrsigner, EVIDENCE: body and body.mr_signer}))
    isv_prod_id = Comparison("ISVPRODID", values(**{SIGSTRUCT: sigstruct.isv_prod_id, CONFIG: config.get("isv_prod_id"),
                                                    EVIDENCE: body.isv_prod_id if body else None}))
    isv_svn = Comparison("ISVSVN", values(**{SIGSTRUCT: sigstruct.isv_svn, CONFIG: config.get("isv_svn"),
                                             EVIDENCE: body.isv_svn if body else None}))
    attributes = AttributesCheck(sigstruct.attributes, sigstruct.attribute_mask,
                                 body.attributes if body else None, config.get("debug"))
    if body is not None and body.attributes.debug:
        notes.append("the attested enclave runs in DEBUG mode: its memory, keys included, is readable by the host")
    return ReproducibilityReport(
        kind=kind, mrenclave=mrenclave, mrsigner=mrsigner, isv_prod_id=isv_prod_id, isv_svn=isv_svn,
        attributes=attributes, sigstruct_signature_ok=signature_error is None, sigstruct_error=signature_error,
        source=source_info or None, evidence=read.summary if read else None,
        report_data=read.report_data if read else None,
        differences=tuple(differences[:MAX_DIFFERENCES]), differences_truncated=len(differences) > MAX_DIFFERENCES,
        config_mismatches=tuple(mismatches), extra_problems=tuple(problems),
        notes=tuple(notes) + (read.notes if read else ()),
    )


def _sdk_config(xml: bytes, metadata: Any) -> tuple[dict[str, Any], list[ConfigMismatch], list[str]]:
    """The configuration XML's identity values, its disagreements with the decoded metadata, and notes."""
    from sgx_iot.sgx import enclave_config

    config = enclave_config.parse_xml(xml)
    decoded = enclave_config.decode_metadata(metadata)
    mismatches = [ConfigMismatch(m.element, m.published, m.decoded) for m in enclave_config.compare(config, decoded)]
    values: dict[str, Any] = {"isv_prod_id": config.prod_id, "isv_svn": config.isv_svn}
    if config.disable_debug is not None:
        values["debug"] = not config.disable_debug
    unchecked = enclave_config.unchecked(config)
    notes = [f"configuration elements not checked against the metadata: {', '.join(unchecked)}"] if unchecked else []
    return values, mismatches, notes


def _recipe_config(root: Path, relative: str | None) -> bytes | None:
    if relative is None:
        return None
    return read_input(root / relative, "enclave configuration named by the recipe")


def _locate(enclave: SdkEnclave, start: int, end: int) -> FileDifference:
    """Name the section holding ``start`` (the first differing byte) and the offset inside it."""
    for section in enclave.elf.sections:
        if section.file_size and section.offset <= start < section.offset + section.file_size:
            return FileDifference(start, end - start, section.name or "(unnamed)", start - section.offset)
    if start < enclave.elf.header_size:
        return FileDifference(start, end - start, "ELF header", start)
    for name, (lo, hi) in (("program headers", enclave.elf.phdr_range), ("section headers", enclave.elf.shdr_range)):
        if lo <= start < hi:
            return FileDifference(start, end - start, name, start - lo)
    return FileDifference(start, end - start)


def _plain(value: Any) -> Any:
    if hasattr(value, "flags") and hasattr(value, "xfrm"):
        return f"flags 0x{value.flags:x} xfrm 0x{value.xfrm:x}"
    return value


def _collateral(value: Any) -> Any:
    if isinstance(value, str | os.PathLike) and not (isinstance(value, str) and value.lstrip().startswith("{")):
        return read_input(value, "collateral")
    return value
