"""The auditor on sgx-iot's own enclave: MRENCLAVE from a source tree (folder or git URL@rev), no build step.

The source trees are copies of this repository's ``sgx_iot`` package in temporary folders; the simulated platform
measures the image at EINIT independently of the auditor, and its quotes are the evidence.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sgx_iot.audit import mrenclave_from_source, verify_mrenclave
from sgx_iot.enclave.config import load_config
from sgx_iot.enclave.image import TRUSTED_FILES, build_image, installed_source_root
from sgx_iot.errors import UsageError
from sgx_iot.platform.sim import SimPlatform, build_collateral
from sgx_iot.sgx.keybinding import bind_key
from sgx_iot.sgx.sigstruct import Sigstruct, generate_signing_key
from sgx_iot.verify.evidence import Evidence

NONCE = bytes(range(32))


@functools.cache
def _key() -> rsa.RSAPrivateKey:
    return generate_signing_key()


def _git(cwd: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "HOME": str(cwd), "PATH": "/usr/bin:/bin"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def sign_for(repo: Path, mrenclave: bytes, **overrides: object) -> bytes:
    """The SIGSTRUCT `enclave sign` would make for the tree at ``repo`` (values from its enclave.toml)."""
    config = load_config(repo / "src")
    fields = {"isv_prod_id": config.isv_prod_id, "isv_svn": config.isv_svn, "attributes": config.attributes,
              "attribute_mask": config.attribute_mask, "misc_select": config.misc_select,
              "misc_mask": config.misc_mask, **overrides}
    unsigned = Sigstruct.build(enclave_hash=mrenclave, release=False, **fields)  # type: ignore[arg-type]
    return unsigned.sign(_key()).to_bytes()


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    """A repository-shaped copy of the sgx_iot package: ``repo/src/sgx_iot`` plus a README."""
    root = tmp_path / "repo"
    shutil.copytree(installed_source_root() / "sgx_iot", root / "src" / "sgx_iot",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (root / "README.md").write_text("sgx-iot\n")
    return root


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> SimPlatform:
    return SimPlatform(tmp_path_factory.mktemp("sim") / "platform")


def _flip(path: Path, data: bytes) -> None:
    """Change one byte (the last one; an empty file gets one byte)."""
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 0x01]) if data else b"\n")


def test_source_mrenclave_equals_what_the_platform_measured_at_launch(repo: Path, platform: SimPlatform) -> None:
    audited = mrenclave_from_source(repo)
    assert audited.kind == "sgx-iot" and len(audited.mrenclave) == 32
    assert audited.to_dict()["mrenclave"] == audited.mrenclave.hex() and "no build step" in audited.note()
    config = load_config(repo / "src")
    assert (audited.isv_prod_id, audited.isv_svn) == (config.isv_prod_id, config.isv_svn)
    sigstruct = Sigstruct.parse(sign_for(repo, audited.mrenclave))
    runtime = platform.launch(build_image(repo / "src"), sigstruct)  # EINIT measures the image itself
    assert runtime.identity.mrenclave == audited.mrenclave
    assert mrenclave_from_source(repo / "src").mrenclave == audited.mrenclave  # the src/ folder works too


def test_one_byte_in_any_enclave_file_changes_mrenclave_other_files_do_not(repo: Path) -> None:
    src = repo / "src"
    baseline = mrenclave_from_source(repo).mrenclave
    seen = {baseline}
    for rel in TRUSTED_FILES:
        path = src / rel
        original = path.read_bytes()
        _flip(path, original)
        changed = mrenclave_from_source(repo).mrenclave
        assert changed not in seen, f"changing {rel} did not give a new MRENCLAVE"
        seen.add(changed)
        path.write_bytes(original)
    config = src / "sgx_iot" / "enclave" / "enclave.toml"
    original = config.read_bytes()
    config.write_bytes(original.replace(b"\nisv_svn = 1\n", b"\nisv_svn = 2\n", 1))
    assert config.read_bytes() != original
    assert mrenclave_from_source(repo).mrenclave not in seen
    config.write_bytes(original)
    for rel in ("sgx_iot/cli/main.py", "sgx_iot/audit/verify.py", "sgx_iot/verify/policy.py"):
        path = src / rel
        _flip(path, path.read_bytes())
    _flip(repo / "README.md", (repo / "README.md").read_bytes())
    (src / "sgx_iot" / "enclave" / "notes.txt").write_text("not an enclave file\n")
    assert mrenclave_from_source(repo).mrenclave == baseline


def test_report_matches_sigstruct_and_sgx_iot_evidence(repo: Path, platform: SimPlatform) -> None:
    mrenclave = mrenclave_from_source(repo).mrenclave
    signed = sign_for(repo, mrenclave)
    runtime = platform.launch(build_image(repo / "src"), Sigstruct.parse(signed))
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    quote = runtime.get_quote(runtime.create_report(runtime.qe_target_info(), bind_key(key, NONCE)))
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    collateral = json.loads(build_collateral(platform.store).to_json())
    evidence = Evidence("simulated", quote, pem, NONCE, {}, collateral).to_json().encode()
    root = platform.store.pki.root_der()

    report = verify_mrenclave(repo, signed, evidence=evidence, root_ca=root)
    assert report, report.problems()
    assert report.kind == "sgx-iot"
    assert set(report.mrenclave.values) == {"source", "sigstruct", "evidence"}
    assert set(report.mrenclave.values.values()) == {mrenclave}
    assert dict(report.isv_svn.values) == {"sigstruct": 1, "config": 1, "evidence": 1}
    assert report.evidence is not None and report.evidence.verified and report.evidence.status == "UpToDate"
    assert report.report_data is not None and report.report_data.binding == "sgx-iot"
    assert report.report_data.public_key == key.public_bytes(serialization.Encoding.X962,
                                                             serialization.PublicFormat.UncompressedPoint)
    assert report.report_data_trusted
    assert any("simulated" in note for note in report.notes)

    swapped = ec.generate_private_key(ec.SECP256R1()).public_key()
    swapped_pem = swapped.public_bytes(serialization.Encoding.PEM,
                                       serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    bad = Evidence("simulated", quote, swapped_pem, NONCE, {}, collateral).to_json().encode()
    report = verify_mrenclave(repo, signed, evidence=bad, root_ca=root)
    assert not report and report.report_data is not None and not report.report_data.binding_ok
    assert "REPORTDATA does not bind" in report.problems()[-1]

    untrusted = verify_mrenclave(repo, signed, evidence=evidence)  # Intel's root only: the sim root is refused
    assert not untrusted and untrusted.evidence is not None
    assert untrusted.evidence.error is not None and untrusted.evidence.error.startswith("UNTRUSTED_ROOT")


def test_source_changed_after_signing_is_a_mismatch(repo: Path) -> None:
    signed = sign_for(repo, mrenclave_from_source(repo).mrenclave)
    program = repo / "src" / "sgx_iot" / "enclave" / "program.py"
    _flip(program, program.read_bytes())
    report = verify_mrenclave(repo, signed)
    assert not report and not report.mrenclave.matches
    assert report.problems()[0].startswith("MRENCLAVE differs")


def test_sigstruct_disagreeing_with_enclave_toml(repo: Path) -> None:
    mrenclave = mrenclave_from_source(repo).mrenclave
    report = verify_mrenclave(repo, sign_for(repo, mrenclave, isv_svn=5))
    assert not report and report.mrenclave.matches
    assert dict(report.isv_svn.values) == {"sigstruct": 5, "config": 1}
    config = load_config(repo / "src")
    other_mask = type(config.attribute_mask)(config.attribute_mask.flags ^ 0x2, config.attribute_mask.xfrm)
    report = verify_mrenclave(repo, sign_for(repo, mrenclave, attribute_mask=other_mask))
    assert [m.field for m in report.config_mismatches] == ["attribute_mask"]


def test_git_url_source_at_a_revision(repo: Path) -> None:
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "audited")
    first = _git(repo, "rev-parse", "HEAD")
    audited = mrenclave_from_source(f"file://{repo}@{first}")
    assert audited.commit == first
    signed = sign_for(repo, audited.mrenclave)
    program = repo / "src" / "sgx_iot" / "enclave" / "program.py"
    _flip(program, program.read_bytes())
    _git(repo, "commit", "-q", "-am", "changed after the audit")

    report = verify_mrenclave(f"file://{repo}@{first}", signed)
    assert report, report.problems()
    assert report.source is not None and report.source["commit"] == first
    assert report.source["source"] == f"file://{repo}@{first}"
    assert not verify_mrenclave(f"file://{repo}", signed), "HEAD holds a changed enclave"
    assert mrenclave_from_source(f"file://{repo}").mrenclave != audited.mrenclave


def test_unusable_inputs(repo: Path, tmp_path: Path) -> None:
    signed = sign_for(repo, mrenclave_from_source(repo).mrenclave)
    with pytest.raises(UsageError, match="give the source"):
        verify_mrenclave(None, signed)
    with pytest.raises(UsageError, match="is for Intel SGX SDK enclaves"):
        verify_mrenclave(repo, signed, unsigned=b"\x7fELF")
    sdk = tmp_path / "sdk"
    sdk.mkdir()
    (sdk / ".auditee.yml").write_text("enclaves:\n  - build: {builder: make, enclave_file: enclave.so}\n")
    with pytest.raises(UsageError, match="SGX SDK enclave recipe"):
        verify_mrenclave(sdk, signed)
    with pytest.raises(UsageError, match="signed enclave too"):
        mrenclave_from_source(sdk)
    with pytest.raises(UsageError, match="measured from its source alone"):
        mrenclave_from_source(repo, signed_enclave=signed)
