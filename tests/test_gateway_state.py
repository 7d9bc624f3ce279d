"""The gateway state folder and session: default location, strict configuration, atomic files, self-repair of the
host's public key copy, and --stdin lines signed in one ECALL."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from _enclave_helpers import installed_build, sigstruct_for
from sgx_iot.enclave.host import SealPolicy
from sgx_iot.enclave.protocol import Op, decode_body
from sgx_iot.errors import FormatError, UsageError
from sgx_iot.gateway.attestation import collect_evidence, parse_nonce
from sgx_iot.gateway.provisioning import init_gateway
from sgx_iot.gateway.session import GatewaySession
from sgx_iot.gateway.signing import LINES_PER_ECALL, sign_files, sign_lines
from sgx_iot.gateway.state import GatewayConfig, GatewayState, default_state_folder, sha256_hex


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> GatewayState:
    folder = tmp_path_factory.mktemp("gw")
    sigstruct = folder / "enclave.sigstruct"
    sigstruct.write_bytes(sigstruct_for(installed_build()).to_bytes())
    state = GatewayState(folder / "state")
    result = init_gateway(state, sigstruct=sigstruct, platform=folder / "platform", policy=SealPolicy.MRSIGNER)
    assert result.action == "provisioned" and result.public_key == state.public_key()
    return state


@pytest.fixture()
def session(provisioned: GatewayState) -> Iterator[GatewaySession]:
    with GatewaySession(provisioned) as running:
        yield running


def test_default_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SGX_IOT_GATEWAY_HOME", str(tmp_path / "home"))
    assert default_state_folder() == tmp_path / "home"
    monkeypatch.delenv("SGX_IOT_GATEWAY_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_state_folder() == tmp_path / "xdg" / "sgx-iot" / "gateway"
    assert GatewayState().folder == tmp_path / "xdg" / "sgx-iot" / "gateway"


def test_config_round_trip_and_strictness(provisioned: GatewayState) -> None:
    text = provisioned.config_path.read_text()
    config = GatewayConfig.from_json(text)
    assert GatewayConfig.from_json(config.to_json()) == config
    assert config.sealed_key_sha256 == sha256_hex(provisioned.sealed_key())
    doc = json.loads(text)
    for change, field in [({"extra": 1}, "extra"), ({"policy": "both"}, "policy"), ({"debug": "no"}, "debug"),
                          ({"format": "x"}, "format"), ({"sealed_key_sha256": "ab"}, "sealed_key_sha256")]:
        with pytest.raises(FormatError) as info:
            GatewayConfig.from_json(json.dumps({**doc, **change}))
        assert info.value.field == field
    missing = dict(doc)
    del missing["platform"]
    with pytest.raises(FormatError, match="platform"):
        GatewayConfig.from_json(json.dumps(missing))


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_config_parser_raises_only_format_error(data: str | bytes) -> None:
    try:
        GatewayConfig.from_json(data)
    except FormatError:
        pass


def test_no_temporary_files_are_left_behind(provisioned: GatewayState) -> None:
    names = sorted(p.name for p in provisioned.folder.iterdir())
    assert names == ["enclave.sigstruct", "gateway.json", "public_key.pem", "sealed_key.bin"]


def test_stdin_lines_are_signed_in_ecalls_of_256(provisioned: GatewayState) -> None:
    frames: list[tuple[str, bytes]] = []
    with GatewaySession(provisioned, tap=lambda d, b: frames.append((d, b))) as running:
        lines = [f"reading {i}\n".encode() for i in range(300)] + [b"last line without newline"]
        batches = list(sign_lines(running, lines))
    sent = [decode_body(data[4:]) for direction, data in frames if direction == "send"]
    assert [m.kind for m in sent] == [Op.SIGN, Op.SIGN]  # LINES_PER_ECALL lines per ECALL, then the rest
    assert [len(m.items) for m in sent] == [1 + LINES_PER_ECALL, 1 + len(lines) - LINES_PER_ECALL]
    assert [d for d, _ in frames[-4:]] == ["send", "send", "receive", "receive"]  # the second sent before the
    key = provisioned.public_key()                                                # first answer was read
    signatures = [signature for batch in batches for signature in batch]
    for line, signature in zip(lines, signatures, strict=True):
        key.verify(signature, line.rstrip(b"\n"), ec.ECDSA(hashes.SHA256()))


def test_sign_lines_batches(session: GatewaySession) -> None:
    batches = list(sign_lines(session, [b"a\n", b"b\n", b"c"], batch=2))
    assert [len(b) for b in batches] == [2, 1]
    key = session.state.public_key()
    for line, signature in zip([b"a", b"b", b"c"], batches[0] + batches[1], strict=True):
        key.verify(signature, line, ec.ECDSA(hashes.SHA256()))
    for bad in (0, 4097):
        with pytest.raises(UsageError, match="batch size"):
            list(sign_lines(session, [b"a"], batch=bad))


def test_sign_files_requires_files(session: GatewaySession, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="at least one file"):
        sign_files(session, [])
    with pytest.raises(UsageError, match="is a folder"):
        sign_files(session, [tmp_path])


def test_interrupted_init_is_repaired_on_next_use(provisioned: GatewayState, tmp_path: Path) -> None:
    """A crash after the sealed key was written but before the public key and config: the enclave's key wins."""
    state = GatewayState(tmp_path / "state")
    shutil.copytree(provisioned.folder, state.folder)
    with GatewaySession(state) as running:
        newer = running.client.provision()
    state.write_sealed_key(newer.sealed)  # as if `init --force` stopped here
    assert state.public_key() != newer.public_key
    with GatewaySession(state) as running:
        running.sign([b"x"])
    assert state.public_key() == newer.public_key
    assert state.config().sealed_key_sha256 == sha256_hex(newer.sealed)


def test_evidence_from_a_session(session: GatewaySession) -> None:
    nonce = parse_nonce("ab" * 20)
    evidence = collect_evidence(session, nonce)
    assert evidence.nonce == nonce and evidence.collateral is None and len(evidence.quote) > 1000
    with pytest.raises(UsageError, match="16 to 64 bytes"):
        collect_evidence(session, b"short")


def test_unreadable_state_files(provisioned: GatewayState, tmp_path: Path) -> None:
    state = GatewayState(tmp_path / "state")
    shutil.copytree(provisioned.folder, state.folder)
    state.sealed_key_path.unlink()
    with pytest.raises(UsageError, match="missing from the gateway state"):
        state.sealed_key()
    state.public_key_path.write_text("not pem")
    with pytest.raises(FormatError):
        state.public_key()
    state.config_path.write_text("{")
    with pytest.raises(FormatError, match="not JSON"):
        state.config()
