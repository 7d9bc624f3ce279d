"""`sgx-iot enclave …` and `sgx-iot gateway …` end to end: keygen → sign → init → sign/attest/pubkey, signatures
checked with cryptography and the openssl binary, evidence with dcap-qvl, and every refusal with its own sentence."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import dcap_qvl
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from _enclave_helpers import SRC, copy_tree, installed_build, sigstruct_for
from sgx_iot.cli.main import app
from sgx_iot.enclave import image
from sgx_iot.errors import VerificationError
from sgx_iot.platform.sim.store import PlatformStore
from sgx_iot.sgx.keybinding import check_key_binding
from sgx_iot.sgx.sealed import SealedData
from sgx_iot.sgx.sigstruct import Sigstruct
from sgx_iot.verify.evidence import Evidence

runner = CliRunner()
NONCE = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"


def cli(*args: str | Path, input: bytes | None = None, code: int = 0) -> str:  # noqa: A002
    result = runner.invoke(app, [str(a) for a in args], input=input)
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    return result.stdout if code == 0 else " ".join(result.stderr.split())


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A signing key, a SIGSTRUCT, a platform and a provisioned gateway state, all made through the CLI."""
    folder = tmp_path_factory.mktemp("gateway")
    cli("enclave", "keygen", "--out", folder / "signer.pem")
    cli("enclave", "sign", "--key", folder / "signer.pem", "--out", folder / "enclave.sigstruct")
    cli("gateway", "init", "--state", folder / "state", "--platform", folder / "platform",
        "--sigstruct", folder / "enclave.sigstruct")  # fmt: skip
    return folder


def public_key(path: Path) -> ec.EllipticCurvePublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


# --- sgx-iot enclave ----------------------------------------------------------------------------------------------

def test_keygen_writes_a_private_rsa3072_e3_key(work: Path) -> None:
    path = work / "signer.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    assert key.key_size == 3072 and key.public_key().public_numbers().e == 3  # type: ignore[union-attr]
    assert "already exists" in cli("enclave", "keygen", "--out", path, code=2)


def test_sign_makes_the_sigstruct_of_the_measured_image(work: Path, tmp_path: Path) -> None:
    sigstruct = Sigstruct.parse((work / "enclave.sigstruct").read_bytes())
    sigstruct.verify()
    config = installed_build().config
    assert sigstruct.enclave_hash == image.measure(SRC)
    assert (sigstruct.isv_prod_id, sigstruct.isv_svn) == (config.isv_prod_id, config.isv_svn)
    assert sigstruct.attributes == config.attributes and sigstruct.attribute_mask == config.attribute_mask
    out = json.loads(cli("enclave", "sign", "--key", work / "signer.pem", "--out", tmp_path / "s", "--src",
                         SRC.parent, "--date", "2026-01-31", "--json"))  # fmt: skip
    assert out["mrenclave"] == image.measure(SRC).hex() and out["date"] == "2026-01-31"
    again = tmp_path / "again"
    cli("enclave", "sign", "--key", work / "signer.pem", "--out", again, "--date", "2026-01-31")
    assert again.read_bytes() == (tmp_path / "s").read_bytes()  # deterministic for a given date
    assert "YYYY-MM-DD" in cli("enclave", "sign", "--key", work / "signer.pem", "--out", again, "--date", "31/01",
                               code=2)  # fmt: skip
    (tmp_path / "weak.pem").write_bytes(serialization.load_pem_private_key(
        (work / "signer.pem").read_bytes(), None).private_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())[:50])
    assert "is not a private key in PEM or DER" in cli("enclave", "sign", "--key", tmp_path / "weak.pem", "--out",
                                                       again, code=2)  # fmt: skip
    (tmp_path / "locked.pem").write_bytes(serialization.load_pem_private_key(
        (work / "signer.pem").read_bytes(), None).private_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")))
    assert "is an encrypted private key" in cli("enclave", "sign", "--key", tmp_path / "locked.pem", "--out",
                                                again, code=2)  # fmt: skip
    assert "enclave keygen" in cli("enclave", "sign", "--key", tmp_path / "none.pem", "--out", again, code=2)


def test_measure(tmp_path: Path) -> None:
    text = cli("enclave", "measure")
    assert text.startswith(f"MRENCLAVE {image.measure(SRC).hex()}")
    described = json.loads(cli("enclave", "measure", "--src", SRC.parent, "--json"))
    assert described["mrenclave"] == image.measure(SRC).hex()
    assert [f["path"] for f in described["files"]] == list(image.TRUSTED_FILES)
    assert "not an sgx-iot source tree" in cli("enclave", "measure", "--src", tmp_path, code=2)


# --- sgx-iot gateway ----------------------------------------------------------------------------------------------

def test_state_folder_contents(work: Path) -> None:
    state = work / "state"
    assert sorted(p.name for p in state.iterdir()) == ["enclave.sigstruct", "gateway.json", "public_key.pem",
                                                       "sealed_key.bin"]  # fmt: skip
    assert stat.S_IMODE((state / "sealed_key.bin").stat().st_mode) == 0o600
    SealedData.parse((state / "sealed_key.bin").read_bytes())
    config = json.loads((state / "gateway.json").read_text())
    assert config["policy"] == "mrsigner" and config["platform"] == str((work / "platform").resolve())
    assert config["enclave"]["mrenclave"] == image.measure(SRC).hex()


def test_sign_files_verify_with_openssl_and_cryptography(work: Path) -> None:
    data = work / "Sensor_Data"
    data.write_bytes(b'{"temperature": 21.5, "humidity": 40}\n')
    other = work / "second.bin"
    other.write_bytes(os.urandom(3 * 1024 * 1024))
    out = cli("gateway", "sign", "--state", work / "state", data, other)
    key_path = Path(out.strip())
    assert key_path == work / "state" / "public_key.pem"
    for path in (data, other):
        signature = path.with_name(path.name + ".sig").read_bytes()
        public_key(key_path).verify(signature, path.read_bytes(), ec.ECDSA(hashes.SHA256()))
        verified = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(key_path), "-signature",
                                   str(path) + ".sig", str(path)], capture_output=True, text=True)  # fmt: skip
        assert verified.returncode == 0 and "Verified OK" in verified.stdout
    data.write_bytes(data.read_bytes() + b" ")
    tampered = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(key_path), "-signature",
                               str(data) + ".sig", str(data)], capture_output=True, text=True)  # fmt: skip
    assert tampered.returncode == 1


@pytest.mark.parametrize("encoding", ["hex", "base64"])
def test_sign_stdin_one_signature_per_line(work: Path, encoding: str) -> None:
    lines = [b"reading 1", b"", b"reading 3 \xff"]
    args = ["gateway", "sign", "--state", work / "state", "--stdin"] + (["--base64"] if encoding == "base64" else [])
    out = cli(*args, input=b"\n".join(lines) + b"\n").splitlines()
    assert len(out) == 3
    key = public_key(work / "state" / "public_key.pem")
    for line, text in zip(lines, out, strict=True):
        signature = base64.b64decode(text) if encoding == "base64" else bytes.fromhex(text)
        key.verify(signature, line, ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize("batch", ["1", "3", "4096"])
def test_sign_stdin_in_small_batches_keeps_every_line_in_order(work: Path, batch: str) -> None:
    """--batch N: lines go to the enclave N per ECALL as a pipelined stream; output order and count are those
    of the input whatever N (1 and 3 do not divide the 10 lines evenly into one batch)."""
    lines = [b"line %d" % i for i in range(10)]
    out = cli("gateway", "sign", "--state", work / "state", "--stdin", "--batch", batch,
              input=b"\n".join(lines)).splitlines()  # no final newline: the last line counts too
    key = public_key(work / "state" / "public_key.pem")
    assert len(out) == len(lines)
    for line, text in zip(lines, out, strict=True):
        key.verify(bytes.fromhex(text), line, ec.ECDSA(hashes.SHA256()))


def test_sign_usage_errors(work: Path) -> None:
    assert "not both" in cli("gateway", "sign", "--state", work / "state", code=2)
    assert "does not exist" in cli("gateway", "sign", "--state", work / "state", work / "missing", code=2)
    assert "--stdin only" in cli("gateway", "sign", "--state", work / "state", "--batch", "5", work / "x", code=2)
    for bad in ("0", "4097"):
        cli("gateway", "sign", "--state", work / "state", "--stdin", "--batch", bad, input=b"x\n", code=2)


def test_attest_evidence_verifies_and_binds_key_and_nonce(work: Path) -> None:
    out = work / "evidence.json"
    cli("gateway", "attest", "--state", work / "state", "--nonce", NONCE, "--out", out, "--collateral")
    evidence = Evidence.from_json(out.read_text())
    assert evidence.platform == "simulated" and evidence.nonce == bytes.fromhex(NONCE)
    assert evidence.enclave["mrenclave"] == image.measure(SRC).hex() and evidence.enclave["debug"] is False
    assert evidence.public_key_pem == (work / "state" / "public_key.pem").read_text()
    root = PlatformStore.open(work / "platform", create=False).pki.root_der()
    collateral = dcap_qvl.QuoteCollateralV3.from_json(json.dumps(evidence.collateral))
    verified = dcap_qvl.verify_with_root_ca(evidence.quote, collateral, root, int(time.time()))
    report_data = bytes.fromhex(json.loads(verified.to_json())["report"]["SgxEnclave"]["report_data"])
    key = serialization.load_pem_public_key(evidence.public_key_pem.encode())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    check_key_binding(report_data, key, evidence.nonce)

    # An evidence file whose public key was swapped for another one is refused by the binding check.
    swapped = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(VerificationError) as info:
        check_key_binding(report_data, swapped, evidence.nonce)
    assert info.value.code == "KEY_BINDING_MISMATCH"
    with pytest.raises(VerificationError):
        check_key_binding(report_data, key, bytes(32))  # and another nonce

    plain = work / "plain.json"
    cli("gateway", "attest", "--state", work / "state", "--nonce", NONCE, "--out", plain)
    assert Evidence.from_json(plain.read_text()).collateral is None


@pytest.mark.parametrize("nonce", ["abc", "00" * 15, "00" * 65, "zz" * 16])
def test_attest_refuses_bad_nonces(work: Path, nonce: str) -> None:
    message = cli("gateway", "attest", "--state", work / "state", "--nonce", nonce, "--out", work / "x.json", code=2)
    assert "nonce" in message


def test_pubkey(work: Path, tmp_path: Path) -> None:
    stored = (work / "state" / "public_key.pem").read_text()
    assert cli("gateway", "pubkey", "--state", work / "state") == stored
    state = tmp_path / "state"
    shutil.copytree(work / "state", state)
    (state / "public_key.pem").write_text("damaged")
    assert cli("gateway", "pubkey", "--state", state, "--from-enclave") == stored
    assert (state / "public_key.pem").read_text() == stored  # the host copy was repaired


# --- refusals -----------------------------------------------------------------------------------------------------

def test_no_sealed_key_yet(tmp_path: Path) -> None:
    message = cli("gateway", "sign", "--state", tmp_path / "empty", "--stdin", input=b"x\n", code=2)
    assert "no sealed key yet" in message and "sgx-iot gateway init" in message
    assert "--sigstruct" in cli("gateway", "init", "--state", tmp_path / "empty", code=2)


def test_already_provisioned(work: Path) -> None:
    assert "already provisioned" in cli("gateway", "init", "--state", work / "state", code=2)


def test_flipped_bit_in_sealed_blob(work: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    shutil.copytree(work / "state", state)
    blob = bytearray((state / "sealed_key.bin").read_bytes())
    blob[570] ^= 0x10  # inside the ciphertext
    (state / "sealed_key.bin").write_bytes(bytes(blob))
    message = cli("gateway", "sign", "--state", state, "--stdin", input=b"x\n", code=2)
    assert message.startswith("error: UNSEAL_CORRUPT: the sealed key is corrupt") and "backup" in message


def test_blob_moved_to_another_platform(work: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    shutil.copytree(work / "state", state)
    message = cli("gateway", "attest", "--state", state, "--platform", tmp_path / "other-platform", "--nonce", NONCE,
                  "--out", tmp_path / "e.json", code=2)  # fmt: skip
    assert "PLATFORM_NOT_INITIALISED" in message  # a typo in --platform does not silently create one
    cli("sim", "init", "--platform", tmp_path / "other-platform")
    message = cli("gateway", "attest", "--state", state, "--platform", tmp_path / "other-platform", "--nonce", NONCE,
                  "--out", tmp_path / "e.json", code=2)  # fmt: skip
    assert "UNSEAL_OTHER_PLATFORM" in message and "sealed on another platform" in message
    assert not (tmp_path / "e.json").exists()


def test_enclave_resigned_by_another_key(work: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.sigstruct"
    other.write_bytes(sigstruct_for(installed_build(), key_index=1).to_bytes())
    state = tmp_path / "state"
    shutil.copytree(work / "state", state)
    before = {p.name: p.read_bytes() for p in state.iterdir()}
    message = cli("gateway", "init", "--state", state, "--sigstruct", other, code=2)
    assert "UNSEAL_OTHER_SIGNER" in message and "signed by another key" in message
    assert {p.name: p.read_bytes() for p in state.iterdir()} == before  # nothing changed
    (state / "enclave.sigstruct").write_bytes(other.read_bytes())  # forced in behind the gateway's back
    message = cli("gateway", "sign", "--state", state, "--stdin", input=b"x\n", code=2)
    assert "UNSEAL_OTHER_SIGNER" in message and Sigstruct.parse(other.read_bytes()).mrsigner.hex() in message


def test_new_sigstruct_same_signer_keeps_the_key(work: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    shutil.copytree(work / "state", state)
    key = serialization.load_pem_private_key((work / "signer.pem").read_bytes(), None)
    newer = tmp_path / "newer.sigstruct"
    built = installed_build()
    config = built.config
    newer.write_bytes(Sigstruct.build(enclave_hash=built.mrenclave, isv_prod_id=config.isv_prod_id, isv_svn=2,
                                      attributes=config.attributes, attribute_mask=config.attribute_mask,
                                      release=False).sign(key).to_bytes())  # type: ignore[arg-type]
    out = json.loads(cli("gateway", "init", "--state", state, "--sigstruct", newer, "--json"))
    assert out["action"] == "sigstruct-updated" and out["enclave"]["isv_svn"] == 2
    assert (state / "public_key.pem").read_bytes() == (work / "state" / "public_key.pem").read_bytes()
    assert (state / "enclave.sigstruct").read_bytes() == newer.read_bytes()


def test_force_provisions_a_new_key_under_mrenclave_policy(work: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    shutil.copytree(work / "state", state)
    out = json.loads(cli("gateway", "init", "--state", state, "--force", "--policy", "mrenclave", "--json"))
    assert out["action"] == "provisioned" and out["policy"] == "mrenclave"
    assert (state / "public_key.pem").read_bytes() != (work / "state" / "public_key.pem").read_bytes()
    assert SealedData.parse((state / "sealed_key.bin").read_bytes()).key_request.key_policy == 0x1


def test_debug_gateway(work: Path, tmp_path: Path) -> None:
    cli("gateway", "init", "--state", tmp_path / "state", "--platform", work / "platform", "--sigstruct",
        work / "enclave.sigstruct", "--debug")  # fmt: skip
    cli("gateway", "attest", "--state", tmp_path / "state", "--nonce", NONCE, "--out", tmp_path / "e.json")
    assert Evidence.from_json((tmp_path / "e.json").read_text()).enclave["debug"] is True


def test_enclave_modified_after_signing(work: Path, tmp_path: Path) -> None:
    """The gateway runs a source tree whose enclave file changed after `enclave sign`: EINIT names both values."""
    root = copy_tree(tmp_path / "src")
    program = root / "sgx_iot/enclave/program.py"
    program.write_bytes(program.read_bytes() + b"# changed after signing\n")
    state = tmp_path / "state"
    shutil.copytree(work / "state", state)
    command = [sys.executable, "-P", "-c", "import sys; from sgx_iot.cli.main import main; sys.argv[0] = 'sgx-iot'; "
               "main()", "gateway", "sign", "--state", str(state), "--stdin"]  # fmt: skip
    result = subprocess.run(command, input=b"x\n", capture_output=True,
                            env={**os.environ, "PYTHONPATH": str(root), "COLUMNS": "400"})  # fmt: skip
    message = " ".join(result.stderr.decode().split())
    assert result.returncode == 2, message
    assert "EINIT_MRENCLAVE_MISMATCH" in message
    assert image.measure(root).hex() in message and image.measure(SRC).hex() in message
    assert "sgx-iot enclave sign" in message


def test_attest_with_collateral_never_loads_the_platform_secret(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The enclave runs in its own process; in this (host) process reading the platform's root secret is a bug.
    import sgx_iot.platform.sim.store as store_module

    real_read = store_module._read_secret

    def refuse(path: Path) -> bytes:
        if path.name in ("platform-secret.bin", "qe-attestation-key.pem"):
            raise AssertionError(f"the gateway host read the platform secret {path}")
        return real_read(path)

    monkeypatch.setattr(store_module, "_read_secret", refuse)
    out = work / "evidence-secretless.json"
    cli("gateway", "attest", "--state", work / "state", "--nonce", NONCE, "--out", out, "--collateral")
    assert Evidence.from_json(out.read_text()).collateral is not None


def test_init_reads_a_bounded_sigstruct(tmp_path: Path) -> None:
    # A device that never ends (or a huge file) given as the SIGSTRUCT is refused, not read into memory.
    message = cli("gateway", "init", "--state", tmp_path / "gw", "--platform", tmp_path / "p", "--sigstruct",
                  "/dev/zero", code=2)  # fmt: skip
    assert "1808" in message and "too long" in message
    assert not (tmp_path / "gw" / "sealed_key.bin").exists()
