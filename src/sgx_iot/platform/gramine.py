"""Real SGX through Gramine: the :class:`~sgx_iot.platform.base.EnclaveRuntime` of an enclave program that runs
inside ``gramine-sgx``, built on Gramine's ``/dev/attestation`` pseudo-files (SGX_FORMATS.md §9).

Under Gramine the loader is Gramine itself: ``gramine-sgx`` measures the manifest and libraries, EINITs the
enclave with the ``.sig`` SIGSTRUCT and only then starts Python. So :meth:`GraminePlatform.launch` refuses, and
:class:`GramineRuntime` is created *inside* the enclave, where it reads the identity that EINIT established.

How each operation maps onto Gramine (and where it differs from the Intel SGX SDK):

* identity — parsed from a REPORT of this enclave targeted at itself (``my_target_info`` → ``target_info``,
  zero ``user_report_data`` → ``report``): the hardware's EREPORT, produced by Gramine's trusted PAL.
* :meth:`GramineRuntime.create_report` — write ``target_info`` (512 B) and ``user_report_data`` (64 B), read
  ``report`` (432 B).
* :meth:`GramineRuntime.get_quote` — Gramine quotes the *last written* ``user_report_data`` (it asks the quoting
  enclave itself; the QE's TARGETINFO is never exposed). So the REPORT passed in must carry the REPORTDATA this
  runtime wrote last, and the quote's report body must equal the REPORT's body; ``sgx.remote_attestation`` must be
  ``"dcap"``. :meth:`GramineRuntime.qe_target_info` returns this enclave's own TARGETINFO as a stand-in: the
  report body (identity and REPORTDATA) does not depend on the target, only its MAC does.
* :meth:`GramineRuntime.get_key` — Gramine exposes no EGETKEY, only two 16-byte sealing keys,
  ``keys/_sgx_mrenclave`` and ``keys/_sgx_mrsigner``, which Gramine derives with EGETKEY(SEAL) at KEYID 0 and
  this enclave's *current* ISVSVN, CPUSVN and CONFIGSVN (attribute/misc masks from the manifest's
  ``sgx.seal_key.*``, or Gramine's defaults). For a SEAL request with policy MRENCLAVE or MRSIGNER this runtime returns

      AES-128-CMAC(Gramine key of that policy, b"sgx-iot/gramine/seal-key/v1\\0" ‖ the 512-byte key request)

  i.e. one key per request (so per KEYID, as ``sgx_seal_data`` needs for its fixed GCM IV), domain-separated
  from Gramine's own use of the key (encrypted files). This is **not** EGETKEY:

  - the request's ISVSVN, CPUSVN and CONFIGSVN are only derivation input — the key is always bound to the
    enclave's current SVNs, so a blob sealed at ISVSVN *n* does not unseal after an upgrade to *n+1* (even with
    the MRSIGNER policy), nor after a CPUSVN change (microcode / TCB recovery): derivation for an older SVN is
    impossible through Gramine. A request for a *newer* ISVSVN/CONFIGSVN is refused as EGETKEY would;
  - the request's attribute and MISCSELECT masks are derivation input too; the hardware masks are Gramine's;
  - therefore sealed blobs are **not interchangeable** with Intel SGX SDK blobs, nor with the simulated
    platform's: a blob sealed under Gramine unseals only under Gramine (same platform, same enclave identity
    and SVNs), and vice versa.

  REPORT keys (and every other key name, and other policies) are refused with ``NOT_SUPPORTED``.
* :meth:`GramineRuntime.verify_report` — refused (``NOT_SUPPORTED``): it needs EGETKEY(REPORT).

Gramine's attestation files are not thread-safe; this runtime serialises its own accesses with a lock. File
access goes through a tiny :class:`AttestationFiles` object (default: real files) so that tests can supply a
directory that reacts to writes the way Gramine's pseudo-files do.
"""

from __future__ import annotations

import hmac
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms

from sgx_iot.errors import FormatError, PlatformError
from sgx_iot.platform.base import EnclaveIdentity
from sgx_iot.sgx.dcap_quote import DcapQuote
from sgx_iot.sgx.keyrequest import KeyName, KeyPolicy, KeyRequest
from sgx_iot.sgx.report import Report, TargetInfo

KIND = "gramine"
DEFAULT_ATTESTATION_DIR = Path("/dev/attestation")
SEAL_KEY_LABEL = b"sgx-iot/gramine/seal-key/v1\0"
"""Prefix of the CMAC input in :meth:`GramineRuntime.get_key` (domain separation from Gramine's own use)."""

SEAL_KEY_FILES = {int(KeyPolicy.MRENCLAVE): "keys/_sgx_mrenclave", int(KeyPolicy.MRSIGNER): "keys/_sgx_mrsigner"}
"""The Gramine sealing-key pseudo-file for each supported key policy."""

NOT_SUPPORTED = "NOT_SUPPORTED"
_REPORT_DATA_SIZE = 64
_KEY_SIZE = 16
_DOCS = "see deploy/gramine/README.md"
_T = TypeVar("_T")


class AttestationFiles(Protocol):
    """Whole-file access to the attestation folder (names relative to it, e.g. ``"keys/_sgx_mrsigner"``)."""

    def exists(self, name: str) -> bool:
        """True if the file exists."""
        ...

    def read(self, name: str) -> bytes:
        """The file's whole content (``OSError`` if unreadable)."""
        ...

    def write(self, name: str, data: bytes) -> None:
        """Replace the file's content with ``data`` in one open–write–close (``OSError`` if refused)."""
        ...


class DirectoryFiles:
    """:class:`AttestationFiles` on a real folder: plain open/read/write, no temporary files or renames (Gramine's
    pseudo-files take the written bytes when the file is closed and cannot be replaced)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"DirectoryFiles({str(self.root)!r})"

    def exists(self, name: str) -> bool:
        return (self.root / name).exists()

    def read(self, name: str) -> bytes:
        with open(self.root / name, "rb") as handle:
            return handle.read()

    def write(self, name: str, data: bytes) -> None:
        with open(self.root / name, "wb") as handle:
            handle.write(data)


@dataclass(frozen=True)
class GramineDetection:
    """What :func:`detect` found: whether this process runs under Gramine-SGX and how it may attest."""

    path: Path
    present: bool
    attestation_type: str | None

    @property
    def can_quote(self) -> bool:
        """True when DCAP quotes are available (``sgx.remote_attestation = "dcap"``)."""
        return self.present and self.attestation_type == "dcap"


def detect(attestation_dir: str | os.PathLike[str] = DEFAULT_ATTESTATION_DIR) -> GramineDetection:
    """Whether ``attestation_dir`` is a Gramine-SGX attestation folder, and its attestation type (``"none"``,
    ``"epid"``, ``"dcap"``; ``None`` if absent or unreadable). Never raises."""
    path = Path(attestation_dir)
    files = DirectoryFiles(path)
    try:
        present = files.exists("my_target_info") and files.exists("report")
        kind = files.read("attestation_type").decode("ascii").strip() if present else None
    except (OSError, UnicodeDecodeError):
        return GramineDetection(path, False, None)
    return GramineDetection(path, present, kind or None)


class GramineRuntime:
    """The runtime of the enclave this Python process runs in under ``gramine-sgx``.

    ``GramineRuntime()`` reads ``/dev/attestation``; ``attestation_dir`` names another folder; ``files`` replaces
    the file access (tests). Raises ``PlatformError`` GRAMINE_UNAVAILABLE when the folder is not a Gramine-SGX
    attestation folder, GRAMINE_BAD_FILE when a file has the wrong size or does not parse.
    """

    def __init__(
        self,
        attestation_dir: str | os.PathLike[str] = DEFAULT_ATTESTATION_DIR,
        *,
        files: AttestationFiles | None = None,
    ) -> None:
        self._dir = Path(attestation_dir)
        self._files: AttestationFiles = files if files is not None else DirectoryFiles(self._dir)
        self._lock = threading.Lock()
        self._seal_keys: dict[int, bytes] = {}
        self._last_report_data: bytes | None = None
        if not (self._files.exists("my_target_info") and self._files.exists("report")):
            raise PlatformError(
                "GRAMINE_UNAVAILABLE",
                f"{self._dir} is not Gramine's SGX attestation folder: this process is not running inside an enclave "
                f"started by gramine-sgx ({_DOCS})",
            )
        self._attestation_type = self._read("attestation_type").decode("ascii", "replace").strip()
        self._target_info = self._parse(TargetInfo.parse, self._read("my_target_info"), "my_target_info")
        self_report = self.create_report(self._target_info, bytes(_REPORT_DATA_SIZE))
        body = self_report.body
        if body.mr_enclave != self._target_info.mr_enclave or body.attributes != self._target_info.attributes:
            raise PlatformError(
                "GRAMINE_BAD_FILE",
                "my_target_info and this enclave's own REPORT disagree on MRENCLAVE or ATTRIBUTES",
            )
        self._identity = EnclaveIdentity(
            mrenclave=body.mr_enclave,
            mrsigner=body.mr_signer,
            isv_prod_id=body.isv_prod_id,
            isv_svn=body.isv_svn,
            attributes=body.attributes,
            misc_select=body.misc_select,
            cpu_svn=body.cpu_svn,
            config_svn=body.config_svn,
            config_id=body.config_id,
            isv_family_id=body.isv_family_id,
            isv_ext_prod_id=body.isv_ext_prod_id,
        )

    def __repr__(self) -> str:
        return f"GramineRuntime(mrenclave={self._identity.mrenclave.hex()}, kind='gramine')"

    @property
    def identity(self) -> EnclaveIdentity:
        """This enclave's identity, from its own hardware REPORT."""
        return self._identity

    @property
    def platform_kind(self) -> str:
        """Always ``"gramine"``."""
        return KIND

    @property
    def attestation_type(self) -> str:
        """Gramine's ``attestation_type`` (the manifest's ``sgx.remote_attestation``): ``none``, ``epid``, ``dcap``."""
        return self._attestation_type

    def target_info(self) -> TargetInfo:
        """This enclave's TARGETINFO (``my_target_info``)."""
        return self._target_info

    def create_report(self, target: TargetInfo, report_data: bytes) -> Report:
        """EREPORT for ``target`` with 64 bytes of ``report_data`` (EREPORT_BAD_REPORT_DATA otherwise)."""
        if len(report_data) != _REPORT_DATA_SIZE:
            raise PlatformError("EREPORT_BAD_REPORT_DATA", f"REPORTDATA must be 64 bytes, not {len(report_data)}")
        data = bytes(report_data)
        with self._lock:
            self._write("target_info", target.to_bytes())
            self._write("user_report_data", data)
            self._last_report_data = data
            report = self._parse(Report.parse, self._read("report"), "report")
        if report.body.report_data != data:
            raise PlatformError(
                "GRAMINE_BAD_FILE",
                "Gramine's report does not carry the REPORTDATA just written (concurrent use of /dev/attestation?)",
            )
        return report

    def verify_report(self, report: Report) -> None:
        """Refused (``NOT_SUPPORTED``): checking a REPORT's MAC needs EGETKEY(REPORT), which Gramine does not expose."""
        raise PlatformError(
            NOT_SUPPORTED,
            "Gramine does not expose EGETKEY(REPORT), so a REPORT's MAC cannot be checked by the enclave program "
            "(Gramine verifies reports only for its own inter-enclave channels)",
        )

    def qe_target_info(self) -> TargetInfo:
        """Stand-in for the QE's TARGETINFO, which Gramine does not expose: this enclave's own TARGETINFO.

        A REPORT "for the quoting enclave" is then MACed for this enclave, not the QE; that is harmless because
        :meth:`get_quote` lets Gramine create the REPORT for the QE itself, and the report body is the same.
        """
        return self._target_info

    def get_quote(self, report: Report) -> bytes:
        """The DCAP quote v3 of ``report``, which must be the REPORT this runtime created last.

        Refusals: QUOTE_UNAVAILABLE (the manifest's ``sgx.remote_attestation`` is not ``"dcap"``), QUOTE_FAILED
        (Gramine could not get a quote from the host's quoting service), QUOTE_REPORT_MISMATCH (``report`` is not
        this enclave's REPORT of the last written REPORTDATA), GRAMINE_QUOTE_MISMATCH / GRAMINE_BAD_FILE (Gramine
        returned a quote of another body, or not a quote v3).
        """
        if self._attestation_type != "dcap":
            raise PlatformError(
                "QUOTE_UNAVAILABLE",
                f"this enclave's Gramine attestation type is {self._attestation_type!r}, not 'dcap': rebuild and "
                'sign the manifest with sgx.remote_attestation = "dcap" (and a working DCAP quote provider on the '
                f"host) to get quotes ({_DOCS})",
            )
        body = report.body
        me = self._identity
        if body.mr_enclave != me.mrenclave or body.mr_signer != me.mrsigner or body.attributes != me.attributes:
            raise PlatformError("QUOTE_REPORT_MISMATCH", "the REPORT to quote is not a REPORT of this enclave")
        with self._lock:
            last = self._last_report_data
            if last is None or not hmac.compare_digest(body.report_data, last):
                raise PlatformError(
                    "QUOTE_REPORT_MISMATCH",
                    "under Gramine the quote covers the REPORTDATA written last; this REPORT carries other REPORTDATA "
                    "(create its REPORT again just before asking for the quote)",
                )
            try:
                raw = self._files.read("quote")
            except OSError as exc:
                raise PlatformError(
                    "QUOTE_FAILED",
                    f"Gramine could not produce a quote ({exc.strerror or exc}): check the host's DCAP setup (AESM "
                    "service, DCAP quote provider library and its PCCS configuration)",
                ) from None
        quote = self._parse(DcapQuote.parse, raw, "quote")
        if quote.report_body != body:
            raise PlatformError(
                "GRAMINE_QUOTE_MISMATCH",
                "Gramine's quote carries another report body than the REPORT it was asked to quote",
            )
        return raw

    def get_key(self, request: KeyRequest) -> bytes:
        """A 16-byte sealing key for a SEAL request with policy MRENCLAVE or MRSIGNER (see the module docstring:
        derived from Gramine's sealing key, *not* EGETKEY; blobs are not interchangeable with SDK blobs).

        Refusals: NOT_SUPPORTED (REPORT or other key names, other policies), EGETKEY_RESERVED (non-zero reserved
        bytes), EGETKEY_INVALID_ISVSVN / EGETKEY_INVALID_CONFIGSVN (an SVN above this enclave's).
        """
        if request.key_name != KeyName.SEAL:
            what = "REPORT keys" if request.key_name == KeyName.REPORT else f"key name {request.key_name}"
            raise PlatformError(
                NOT_SUPPORTED,
                f"Gramine does not expose {what}: only the sealing keys _sgx_mrenclave and _sgx_mrsigner are available",
            )
        if request.key_policy not in SEAL_KEY_FILES:
            raise PlatformError(
                NOT_SUPPORTED,
                f"key policy {request.key_policy:#x} is not available under Gramine: only MRENCLAVE (0x1) or "
                "MRSIGNER (0x2) alone",
            )
        if any(request.reserved1) or any(request.reserved2):
            raise PlatformError("EGETKEY_RESERVED", "the key request has non-zero reserved bytes")
        me = self._identity
        if request.isv_svn > me.isv_svn:
            raise PlatformError(
                "EGETKEY_INVALID_ISVSVN",
                f"a seal key for ISVSVN {request.isv_svn} was requested by an enclave at ISVSVN {me.isv_svn}",
            )
        if request.config_svn > me.config_svn:
            raise PlatformError(
                "EGETKEY_INVALID_CONFIGSVN",
                f"CONFIGSVN {request.config_svn} is above the enclave's {me.config_svn}",
            )
        mac = cmac.CMAC(algorithms.AES(self._seal_key(request.key_policy)))
        mac.update(SEAL_KEY_LABEL + request.to_bytes())
        return mac.finalize()

    # --- file access ---------------------------------------------------------------------------------------

    def _seal_key(self, policy: int) -> bytes:
        key = self._seal_keys.get(policy)
        if key is None:
            name = SEAL_KEY_FILES[policy]
            with self._lock:
                key = self._read(name)
            if len(key) != _KEY_SIZE:
                raise PlatformError(
                    "GRAMINE_BAD_FILE", f"{self._dir / name} holds {len(key)} bytes, not a 16-byte sealing key"
                )
            self._seal_keys[policy] = key
        return key

    def _read(self, name: str) -> bytes:
        try:
            return self._files.read(name)
        except OSError as exc:
            raise PlatformError("GRAMINE_IO", f"cannot read {self._dir / name}: {exc.strerror or exc}") from None

    def _write(self, name: str, data: bytes) -> None:
        try:
            self._files.write(name, data)
        except OSError as exc:
            raise PlatformError("GRAMINE_IO", f"cannot write {self._dir / name}: {exc.strerror or exc}") from None

    def _parse(self, parse: Callable[[bytes], _T], data: bytes, name: str) -> _T:
        try:
            return parse(data)
        except FormatError as exc:
            message = f"{self._dir / name} is not what Gramine writes there: {exc}"
            raise PlatformError("GRAMINE_BAD_FILE", message) from None


class GraminePlatform:
    """Real SGX hardware run through Gramine. ``kind`` is ``"gramine"``.

    There is nothing to launch from Python: ``gramine-sgx`` EINITs the enclave (with the ``.sig`` SIGSTRUCT made
    by ``gramine-sgx-sign``) before the interpreter starts. Inside it, :meth:`runtime` gives the running enclave's
    runtime.
    """

    def __init__(self, attestation_dir: str | os.PathLike[str] = DEFAULT_ATTESTATION_DIR) -> None:
        self._dir = Path(attestation_dir)

    def __repr__(self) -> str:
        return f"GraminePlatform(attestation_dir={str(self._dir)!r})"

    @property
    def kind(self) -> str:
        """Always ``"gramine"``."""
        return KIND

    def launch(self, image: object, sigstruct: object, *, debug: bool = False) -> GramineRuntime:
        """Refused (``NOT_SUPPORTED``): under Gramine, EINIT is done by ``gramine-sgx`` before Python starts."""
        raise PlatformError(
            NOT_SUPPORTED,
            "under Gramine the enclave is measured and EINITed by gramine-sgx (the loader is Gramine, with the "
            "manifest and its .sig), before Python starts: run the enclave program with `gramine-sgx "
            f"sgx-iot-enclave` and use GramineRuntime() inside it ({_DOCS})",
        )

    def runtime(self) -> GramineRuntime:
        """The runtime of the enclave this process runs in (``PlatformError`` GRAMINE_UNAVAILABLE outside one)."""
        return GramineRuntime(self._dir)
