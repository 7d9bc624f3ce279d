"""The Gramine runtime, against a folder laid out like Gramine's ``/dev/attestation``.

No SGX here. :class:`GramineFolder` is a real folder with Gramine's files whose ``report`` and ``quote`` follow
what is written to ``user_report_data`` / ``target_info``, as Gramine's pseudo-files do (``libos/src/fs/dev/
attestation.c``). Behind it is a genuine enclave of the *simulated* platform, standing for the hardware: reports
come from its EREPORT, quotes from its QE (dcap-qvl verifies them under the simulation root), and the two sealing
keys are EGETKEY(SEAL) with Gramine's key request (``sgx_get_seal_key``: KEYID 0, the enclave's own ISVSVN/CPUSVN/
CONFIGSVN, default masks). The manifest template is checked as TOML after substituting its variables.
"""

from __future__ import annotations

import errno
import json
import re
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _sim_helpers import launch, qvl_collateral, verify
from sgx_iot.enclave.program import EnclaveProgram
from sgx_iot.enclave.protocol import STATUS_OK, Op, decode_body, encode_body
from sgx_iot.errors import PlatformError, VerificationError
from sgx_iot.platform.base import EnclaveRuntime, Platform
from sgx_iot.platform.gramine import (
    DirectoryFiles,
    GraminePlatform,
    GramineRuntime,
    detect,
)
from sgx_iot.platform.sim import SimEnclaveRuntime, SimPlatform, build_collateral
from sgx_iot.sgx.attributes import Attributes
from sgx_iot.sgx.dcap_quote import DcapQuote
from sgx_iot.sgx.keybinding import bind_key
from sgx_iot.sgx.keyrequest import KeyName, KeyPolicy, KeyRequest, seal_key_request
from sgx_iot.sgx.report import Report, TargetInfo
from sgx_iot.sgx.sealed import SealedData, seal

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "deploy" / "gramine" / "sgx-iot-enclave.manifest.template"
ENCLAVE_TOML = REPO / "src" / "sgx_iot" / "enclave" / "enclave.toml"

# Gramine's default sealing masks (manifest-syntax.rst, "sgx.seal_key.*").
GRAMINE_FLAGS_MASK = 0xFFFFFFFFFFFFFFFF
GRAMINE_XFRM_MASK = 0xFFFFFFFFFFF9FF1B
GRAMINE_MISC_MASK = 0xFFFFFFFF
INPUT_SIZES = {"user_report_data": 64, "target_info": 512}


def gramine_seal_key(enclave: SimEnclaveRuntime, policy: KeyPolicy) -> bytes:
    """What Gramine's ``keys/_sgx_mr*`` holds: EGETKEY(SEAL) with its own key request (``sgx_get_seal_key``)."""
    me = enclave.identity
    request = KeyRequest(
        key_name=int(KeyName.SEAL),
        key_policy=int(policy),
        isv_svn=me.isv_svn,
        cpu_svn=me.cpu_svn,
        config_svn=me.config_svn,
        attribute_mask=Attributes(GRAMINE_FLAGS_MASK, GRAMINE_XFRM_MASK),
        misc_mask=GRAMINE_MISC_MASK,
    )
    return enclave.get_key(request)


class GramineFolder(DirectoryFiles):
    """A folder laid out like ``/dev/attestation`` that reacts to writes like Gramine's pseudo-files.

    Inputs shorter than their size are zero-padded and longer ones truncated (``update_buffer``); the other files
    are read-only (EACCES). ``report`` is the EREPORT of the last written target info and report data; ``quote``
    (only with attestation type ``dcap``) the QE's quote of the last written report data, whatever the target.
    """

    def __init__(self, root: Path, enclave: SimEnclaveRuntime, attestation_type: str = "dcap") -> None:
        super().__init__(root)
        self.enclave = enclave
        self.quotes_made = 0
        (root / "keys").mkdir(parents=True)
        (root / "attestation_type").write_bytes(attestation_type.encode("ascii"))
        (root / "my_target_info").write_bytes(enclave.target_info().to_bytes())
        for name, size in INPUT_SIZES.items():
            (root / name).write_bytes(bytes(size))
        (root / "keys" / "_sgx_mrenclave").write_bytes(gramine_seal_key(enclave, KeyPolicy.MRENCLAVE))
        (root / "keys" / "_sgx_mrsigner").write_bytes(gramine_seal_key(enclave, KeyPolicy.MRSIGNER))
        self._dcap = attestation_type == "dcap"
        self._refresh()
        if self._dcap:
            self.read("quote")  # the file exists from the start, as in Gramine with sgx.remote_attestation "dcap"

    def write(self, name: str, data: bytes) -> None:
        if name not in INPUT_SIZES:
            raise PermissionError(errno.EACCES, "read-only pseudo-file", str(self.root / name))
        size = INPUT_SIZES[name]
        super().write(name, data[:size].ljust(size, b"\0"))
        self._refresh()

    def _refresh(self) -> None:
        target = TargetInfo.parse(super().read("target_info"))
        report_data = super().read("user_report_data")
        (self.root / "report").write_bytes(self.enclave.create_report(target, report_data).to_bytes())
        self.stale_quote = self._dcap

    def read(self, name: str) -> bytes:
        if name == "quote" and self.stale_quote:
            # Gramine asks the QE on open; made lazily here, it costs one simulated QE signature per quote read.
            report_data = super().read("user_report_data")
            enclave = self.enclave
            quote = enclave.get_quote(enclave.create_report(enclave.qe_target_info(), report_data))
            (self.root / "quote").write_bytes(quote)
            self.quotes_made += 1
            self.stale_quote = False
        return super().read(name)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> SimPlatform:
    return SimPlatform(tmp_path_factory.mktemp("sim") / "platform")


@pytest.fixture(scope="module")
def enclave(platform: SimPlatform) -> SimEnclaveRuntime:
    return launch(platform)


@pytest.fixture
def folder(tmp_path: Path, enclave: SimEnclaveRuntime) -> GramineFolder:
    return GramineFolder(tmp_path / "attestation", enclave)


@pytest.fixture
def runtime(folder: GramineFolder) -> GramineRuntime:
    return GramineRuntime(folder.root, files=folder)


def seal_request(policy: KeyPolicy, key_id: bytes, runtime: GramineRuntime) -> KeyRequest:
    me = runtime.identity
    return seal_key_request(key_id=key_id, cpu_svn=me.cpu_svn, isv_svn=me.isv_svn, key_policy=policy)


# --- identity and reports ---------------------------------------------------------------------------------


def test_runtime_satisfies_the_platform_interface(runtime: GramineRuntime) -> None:
    assert isinstance(runtime, EnclaveRuntime)
    assert isinstance(GraminePlatform(), Platform)
    assert runtime.platform_kind == "gramine" and GraminePlatform().kind == "gramine"


def test_identity_is_the_enclaves_own_report(runtime: GramineRuntime, enclave: SimEnclaveRuntime) -> None:
    # Expected: the identity EINIT gave the enclave behind the folder (field by field, as EREPORT reports it).
    assert runtime.identity == enclave.identity
    assert runtime.identity.isv_prod_id == 7 and runtime.identity.isv_svn == 1  # _sim_helpers.make_enclave
    assert not runtime.identity.debug
    assert runtime.target_info() == enclave.target_info()
    assert runtime.attestation_type == "dcap"


def test_report_carries_the_written_report_data(runtime: GramineRuntime, folder: GramineFolder) -> None:
    data = bytes(range(64))
    target = TargetInfo(mr_enclave=b"\x11" * 32, attributes=Attributes(0x5, 0x3))
    report = runtime.create_report(target, data)
    assert report.body.report_data == data
    assert report.body.mr_enclave == runtime.identity.mrenclave
    # Gramine saw exactly what was written, and the report file is what was returned.
    assert folder.read("user_report_data") == data
    assert folder.read("target_info") == target.to_bytes()
    assert Report.parse(folder.read("report")) == report


@pytest.mark.parametrize("size", [0, 32, 63, 65, 128])
def test_report_data_must_be_64_bytes(runtime: GramineRuntime, size: int) -> None:
    with pytest.raises(PlatformError) as caught:
        runtime.create_report(runtime.target_info(), bytes(size))
    assert caught.value.code == "EREPORT_BAD_REPORT_DATA"


def test_outside_gramine_is_refused_with_advice(tmp_path: Path) -> None:
    with pytest.raises(PlatformError) as caught:
        GramineRuntime(tmp_path / "no-such-folder")
    assert caught.value.code == "GRAMINE_UNAVAILABLE"
    assert "gramine-sgx" in caught.value.message
    with pytest.raises(PlatformError) as caught:
        GraminePlatform(tmp_path).runtime()
    assert caught.value.code == "GRAMINE_UNAVAILABLE"


def test_detect(tmp_path: Path, enclave: SimEnclaveRuntime) -> None:
    absent = detect(tmp_path / "absent")
    assert (absent.present, absent.attestation_type, absent.can_quote) == (False, None, False)
    assert detect(GramineFolder(tmp_path / "dcap", enclave).root).can_quote
    none = GramineFolder(tmp_path / "none", enclave, "none")
    assert not (none.root / "quote").exists()  # Gramine adds no quote file for type "none"
    found = detect(none.root)
    assert (found.present, found.attestation_type, found.can_quote) == (True, "none", False)


# --- quotes -------------------------------------------------------------------------------------------------


def test_quote_verifies_with_dcap_qvl_under_the_sim_root(
    runtime: GramineRuntime, platform: SimPlatform
) -> None:
    data = bytes(range(100, 164))
    report = runtime.create_report(runtime.qe_target_info(), data)
    quote = runtime.get_quote(report)
    verified = verify(quote, qvl_collateral(build_collateral(platform.store)), platform.store.pki.root_der())
    assert verified.status == "UpToDate"
    enclave = json.loads(verified.to_json())["report"]["SgxEnclave"]
    assert enclave["report_data"] == data.hex()
    assert enclave["mr_enclave"] == runtime.identity.mrenclave.hex()
    assert DcapQuote.parse(quote).report_body == report.body


def test_quote_follows_the_last_written_report_data(runtime: GramineRuntime, folder: GramineFolder) -> None:
    first = runtime.create_report(runtime.qe_target_info(), b"\x01" * 64)
    second = runtime.create_report(runtime.qe_target_info(), b"\x02" * 64)
    made = folder.quotes_made
    with pytest.raises(PlatformError) as caught:
        runtime.get_quote(first)
    assert caught.value.code == "QUOTE_REPORT_MISMATCH"
    assert folder.quotes_made == made  # refused before asking Gramine
    assert DcapQuote.parse(runtime.get_quote(second)).report_body.report_data == b"\x02" * 64


def test_quote_of_another_enclaves_report_is_refused(
    runtime: GramineRuntime, platform: SimPlatform
) -> None:
    other = launch(platform, content=b"another enclave")
    data = b"\x07" * 64
    runtime.create_report(runtime.qe_target_info(), data)
    with pytest.raises(PlatformError) as caught:
        runtime.get_quote(other.create_report(other.qe_target_info(), data))
    assert caught.value.code == "QUOTE_REPORT_MISMATCH"


def test_quote_with_attestation_type_none_is_a_clear_error(tmp_path: Path, enclave: SimEnclaveRuntime) -> None:
    folder = GramineFolder(tmp_path / "attestation", enclave, "none")
    runtime = GramineRuntime(folder.root, files=folder)
    assert runtime.attestation_type == "none"
    report = runtime.create_report(runtime.qe_target_info(), bytes(64))  # reports still work
    with pytest.raises(PlatformError) as caught:
        runtime.get_quote(report)
    assert caught.value.code == "QUOTE_UNAVAILABLE"
    assert 'sgx.remote_attestation = "dcap"' in caught.value.message
    assert "'none'" in caught.value.message


def test_quote_whose_body_differs_is_refused(runtime: GramineRuntime, folder: GramineFolder) -> None:
    report = runtime.create_report(runtime.qe_target_info(), b"\x03" * 64)
    folder.read("quote")  # Gramine made the quote of this REPORTDATA…
    # …but (a bug, or a host meddling with the quoting service) hands back the quote of other REPORTDATA.
    other = folder.enclave.get_quote(folder.enclave.create_report(folder.enclave.qe_target_info(), b"\x04" * 64))
    (folder.root / "quote").write_bytes(other)
    with pytest.raises(PlatformError) as caught:
        runtime.get_quote(report)
    assert caught.value.code == "GRAMINE_QUOTE_MISMATCH"


# --- sealing keys -------------------------------------------------------------------------------------------


def test_seal_keys_per_policy_and_key_id(runtime: GramineRuntime, folder: GramineFolder) -> None:
    key_a, key_b = b"\xaa" * 32, b"\xbb" * 32
    mrenclave_a = runtime.get_key(seal_request(KeyPolicy.MRENCLAVE, key_a, runtime))
    mrsigner_a = runtime.get_key(seal_request(KeyPolicy.MRSIGNER, key_a, runtime))
    mrsigner_b = runtime.get_key(seal_request(KeyPolicy.MRSIGNER, key_b, runtime))
    assert len({mrenclave_a, mrsigner_a, mrsigner_b}) == 3
    assert all(len(key) == 16 for key in (mrenclave_a, mrsigner_a, mrsigner_b))
    assert runtime.get_key(seal_request(KeyPolicy.MRSIGNER, key_a, runtime)) == mrsigner_a
    # Another runtime on the same enclave (a restart) derives the same key; Gramine's raw key is never returned.
    again = GramineRuntime(folder.root, files=folder)
    assert again.get_key(seal_request(KeyPolicy.MRSIGNER, key_a, again)) == mrsigner_a
    raw = {folder.read("keys/_sgx_mrenclave"), folder.read("keys/_sgx_mrsigner")}
    assert raw.isdisjoint({mrenclave_a, mrsigner_a, mrsigner_b})


def test_every_request_byte_changes_the_key(runtime: GramineRuntime) -> None:
    base = seal_request(KeyPolicy.MRSIGNER, b"\x01" * 32, runtime)
    variants = [
        seal_request(KeyPolicy.MRSIGNER, b"\x01" * 31 + b"\x02", runtime),
        replace(base, misc_mask=0x0FFFFFFF),
        replace(base, attribute_mask=Attributes(0xFF, 0)),
        replace(base, isv_svn=0),
        replace(base, cpu_svn=b"\x01" * 16),
    ]
    keys = {runtime.get_key(request) for request in [base, *variants]}
    assert len(keys) == 1 + len(variants)


def test_mrsigner_keys_are_shared_by_one_signers_enclaves(tmp_path: Path, platform: SimPlatform) -> None:
    first = launch(platform, content=b"gramine enclave one")
    second = launch(platform, content=b"gramine enclave two")
    a = GramineRuntime(tmp_path / "a", files=GramineFolder(tmp_path / "a", first))
    b = GramineRuntime(tmp_path / "b", files=GramineFolder(tmp_path / "b", second))
    assert a.identity.mrenclave != b.identity.mrenclave and a.identity.mrsigner == b.identity.mrsigner
    key_id = b"\x42" * 32
    for policy, shared in ((KeyPolicy.MRSIGNER, True), (KeyPolicy.MRENCLAVE, False)):
        same = a.get_key(seal_request(policy, key_id, a)) == b.get_key(seal_request(policy, key_id, b))
        assert same is shared, policy


def test_seal_round_trip_with_sgx_sealed_format(runtime: GramineRuntime, folder: GramineFolder) -> None:
    request = seal_request(KeyPolicy.MRENCLAVE, b"\x5a" * 32, runtime)
    blob = seal(runtime.get_key(request), request, b"gateway private key", b"aad").to_bytes()
    sealed = SealedData.parse(blob)
    restarted = GramineRuntime(folder.root, files=folder)
    assert sealed.unseal(restarted.get_key(sealed.key_request)) == (b"gateway private key", b"aad")


def test_upgraded_isvsvn_cannot_unseal_under_gramine(tmp_path: Path, platform: SimPlatform) -> None:
    # The documented difference from EGETKEY: Gramine's key is bound to the *current* ISVSVN, so even an MRSIGNER
    # blob of ISVSVN 1 does not unseal in the same signer's ISVSVN 2 enclave (EGETKEY would allow it).
    old = GramineRuntime(tmp_path / "v1", files=GramineFolder(tmp_path / "v1", launch(platform, isv_svn=1)))
    new = GramineRuntime(tmp_path / "v2", files=GramineFolder(tmp_path / "v2", launch(platform, isv_svn=2)))
    request = seal_request(KeyPolicy.MRSIGNER, b"\x33" * 32, old)
    sealed = seal(old.get_key(request), request, b"secret")
    with pytest.raises(VerificationError) as caught:
        sealed.unseal(new.get_key(sealed.key_request))
    assert caught.value.code == "SEALED_DATA_MAC_MISMATCH"


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (KeyRequest(key_name=int(KeyName.REPORT)), "NOT_SUPPORTED"),
        (KeyRequest(key_name=int(KeyName.PROVISION)), "NOT_SUPPORTED"),
        (KeyRequest(key_name=int(KeyName.SEAL), key_policy=0x3), "NOT_SUPPORTED"),
        (KeyRequest(key_name=int(KeyName.SEAL), key_policy=0x6), "NOT_SUPPORTED"),
        (KeyRequest(key_name=int(KeyName.SEAL), key_policy=0), "NOT_SUPPORTED"),
        (KeyRequest(key_name=int(KeyName.SEAL), key_policy=0x2, isv_svn=2), "EGETKEY_INVALID_ISVSVN"),
        (KeyRequest(key_name=int(KeyName.SEAL), key_policy=0x2, config_svn=1), "EGETKEY_INVALID_CONFIGSVN"),
        (KeyRequest(key_name=int(KeyName.SEAL), key_policy=0x1, reserved2=b"\x01" + bytes(433)), "EGETKEY_RESERVED"),
    ],
)
def test_unsupported_key_requests(runtime: GramineRuntime, request_: KeyRequest, code: str) -> None:
    with pytest.raises(PlatformError) as caught:
        runtime.get_key(request_)
    assert caught.value.code == code


def test_bad_sealing_key_file(runtime: GramineRuntime, folder: GramineFolder) -> None:
    (folder.root / "keys" / "_sgx_mrsigner").write_bytes(b"short")
    with pytest.raises(PlatformError) as caught:
        runtime.get_key(seal_request(KeyPolicy.MRSIGNER, bytes(32), runtime))
    assert caught.value.code == "GRAMINE_BAD_FILE"


# --- unsupported operations -----------------------------------------------------------------------------------


def test_verify_report_and_launch_are_not_supported(runtime: GramineRuntime) -> None:
    report = runtime.create_report(runtime.target_info(), bytes(64))
    with pytest.raises(PlatformError) as caught:
        runtime.verify_report(report)
    assert caught.value.code == "NOT_SUPPORTED"
    with pytest.raises(PlatformError) as caught:
        GraminePlatform().launch(object(), object())
    assert caught.value.code == "NOT_SUPPORTED"
    assert "gramine-sgx" in caught.value.message and "EINIT" in caught.value.message


class FailingFolder(GramineFolder):
    """Gramine's EACCES on the files named in ``failing`` (e.g. ``quote`` when the host's quoting service fails)."""

    failing: frozenset[str] = frozenset()

    def read(self, name: str) -> bytes:
        if name in self.failing:
            raise PermissionError(errno.EACCES, "Permission denied", str(self.root / name))
        return super().read(name)

    def write(self, name: str, data: bytes) -> None:
        if name in self.failing:
            raise PermissionError(errno.EACCES, "Permission denied", str(self.root / name))
        super().write(name, data)


def test_quoting_service_failure_is_a_platform_error(tmp_path: Path, enclave: SimEnclaveRuntime) -> None:
    folder = FailingFolder(tmp_path / "attestation", enclave)
    runtime = GramineRuntime(folder.root, files=folder)
    folder.failing = frozenset({"quote"})
    with pytest.raises(PlatformError) as caught:
        runtime.get_quote(runtime.create_report(runtime.qe_target_info(), bytes(64)))
    assert caught.value.code == "QUOTE_FAILED"
    assert "DCAP" in caught.value.message
    folder.failing = frozenset({"user_report_data"})
    with pytest.raises(PlatformError) as caught:
        runtime.create_report(runtime.qe_target_info(), bytes(64))
    assert caught.value.code == "GRAMINE_IO"
    assert "user_report_data" in caught.value.message


def test_vanished_files_are_platform_errors(folder: GramineFolder) -> None:
    (folder.root / "attestation_type").unlink()
    with pytest.raises(PlatformError) as caught:
        GramineRuntime(folder.root, files=folder)
    assert caught.value.code == "GRAMINE_IO"
    (folder.root / "my_target_info").unlink()
    with pytest.raises(PlatformError) as caught:
        GramineRuntime(folder.root, files=folder)
    assert caught.value.code == "GRAMINE_UNAVAILABLE"


# --- the enclave program on the Gramine runtime ---------------------------------------------------------------


def ecall(program: EnclaveProgram, op: Op, *items: bytes) -> list[bytes]:
    reply = decode_body(program.handle(encode_body(op, list(items))))
    assert reply.kind == STATUS_OK, reply.items
    return reply.items


def test_enclave_program_provisions_attests_and_signs(
    runtime: GramineRuntime, folder: GramineFolder, platform: SimPlatform
) -> None:
    program = EnclaveProgram(runtime)
    sealed, spki = ecall(program, Op.PROVISION, (2).to_bytes(2, "little"))
    nonce = bytes(range(32))
    # A restarted enclave (new runtime, same Gramine keys) unseals the stored blob and attests it.
    restarted = EnclaveProgram(GramineRuntime(folder.root, files=folder))
    key, report_bytes, quote = ecall(restarted, Op.ATTEST, sealed, nonce, b"")
    public_key = serialization.load_der_public_key(spki)
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert key == spki
    expected = bind_key(public_key, nonce)
    assert Report.parse(report_bytes).body.report_data == expected
    verified = verify(quote, qvl_collateral(build_collateral(platform.store)), platform.store.pki.root_der())
    assert json.loads(verified.to_json())["report"]["SgxEnclave"]["report_data"] == expected.hex()
    _, signature = ecall(restarted, Op.SIGN, sealed, b"temperature=21.5")
    public_key.verify(signature, b"temperature=21.5", ec.ECDSA(hashes.SHA256()))


# --- fuzzing: whatever Gramine's files hold, only PlatformError comes out ----------------------------------------

_FILE_BYTES = st.one_of(st.binary(max_size=600), st.sampled_from([bytes(431), bytes(432), bytes(512), bytes(4096)]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["my_target_info", "report"]), content=_FILE_BYTES)
def test_fuzz_startup_files(tmp_path_factory: pytest.TempPathFactory, enclave: SimEnclaveRuntime, name: str,
                            content: bytes) -> None:
    root = tmp_path_factory.mktemp("fuzz")
    (root / name).write_bytes(content)
    (root / ("report" if name == "my_target_info" else "my_target_info")).write_bytes(
        Report().to_bytes() if name == "my_target_info" else enclave.target_info().to_bytes()
    )
    (root / "attestation_type").write_bytes(b"dcap")
    try:
        GramineRuntime(root)
    except PlatformError:
        pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=_FILE_BYTES)
def test_fuzz_quote_file(runtime: GramineRuntime, folder: GramineFolder, content: bytes) -> None:
    report = runtime.create_report(runtime.qe_target_info(), b"\x09" * 64)
    folder.stale_quote = False
    (folder.root / "quote").write_bytes(content)
    with pytest.raises(PlatformError) as caught:
        runtime.get_quote(report)
    assert caught.value.code in ("GRAMINE_BAD_FILE", "GRAMINE_QUOTE_MISMATCH")


# --- the manifest template -----------------------------------------------------------------------------------

TEMPLATE_VALUES = {
    "entrypoint": "/usr/bin/python3.12",
    "arch_libdir": "/lib/x86_64-linux-gnu",
    "gramine.runtimedir()": "/usr/lib/x86_64-linux-gnu/gramine/runtime/glibc",
    "python.stdlib": "/usr/lib/python3.12",
}


def render_template() -> str:
    """The template with each ``{{ expression }}`` replaced, as gramine-manifest would (no Jinja needed)."""
    text = TEMPLATE.read_text(encoding="utf-8")
    assert "{%" not in text, "the template must stay free of Jinja statements (this test substitutes expressions)"
    unknown = sorted(set(re.findall(r"\{\{\s*(.*?)\s*\}\}", text)) - TEMPLATE_VALUES.keys())
    assert not unknown, f"template variables this test does not know: {unknown}"
    return re.sub(r"\{\{\s*(.*?)\s*\}\}", lambda m: TEMPLATE_VALUES[m.group(1)], text)


def test_manifest_template_is_valid_toml_with_the_enclave_settings() -> None:
    manifest = tomllib.loads(render_template())
    identity = tomllib.loads(ENCLAVE_TOML.read_text(encoding="utf-8"))["identity"]
    sgx = manifest["sgx"]
    assert sgx["isvprodid"] == identity["isv_prod_id"]
    assert sgx["isvsvn"] == identity["isv_svn"]
    assert sgx["remote_attestation"] == "dcap"
    assert sgx["debug"] is False and sgx["edmm_enable"] is False
    assert sgx["file_check_policy"] == "strict"
    assert sgx["max_threads"] >= 4
    size = sgx["enclave_size"]
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    value = int(size[:-1]) * units[size[-1]]
    assert value & (value - 1) == 0, "Gramine needs a power-of-two enclave size"
    assert manifest["libos"]["entrypoint"] == "/usr/bin/python3.12"
    loader = manifest["loader"]
    assert loader["argv"][0] == "/usr/bin/python3.12"
    assert loader["argv"][-2:] == ["-m", "sgx_iot.enclave.program"]
    assert loader["env"]["PYTHONPATH"] == "/sgx-iot"
    assert loader["log_level"] == "error"
    trusted = sgx["trusted_files"]
    assert {"file:/usr/bin/python3.12", "file:/usr/lib/python3.12/", "file:enclave-root/"} <= set(trusted)
    mounts = {mount["path"]: mount for mount in manifest["fs"]["mounts"]}
    assert mounts["/sgx-iot"]["uri"] == "file:enclave-root"
    assert mounts["/usr/bin/python3.12"]["uri"] == "file:/usr/bin/python3.12"


def test_manifest_template_has_no_insecure_options() -> None:
    def keys(table: dict[str, object], prefix: str = "") -> list[str]:
        out = []
        for key, value in table.items():
            out.append(prefix + key)
            if isinstance(value, dict):
                out.extend(keys(value, f"{prefix}{key}."))
        return out

    names = keys(tomllib.loads(render_template()))
    assert not [name for name in names if "insecure" in name or "allowed_files" in name], names
