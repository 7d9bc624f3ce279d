"""EINIT on the simulated platform, and its persistent folder (creation, rights, configuration, secrecy)."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _sim_helpers import NO_DEBUG_MASK, SDK_ATTRIBUTES, SDK_MASK, make_enclave, make_image
from sgx_iot.errors import PlatformError, UsageError
from sgx_iot.platform.base import EnclaveRuntime, Platform
from sgx_iot.platform.sim import SimPlatform, default_folder
from sgx_iot.platform.sim.store import ENV_VAR, PlatformConfig, PlatformStore
from sgx_iot.sgx.attributes import Attributes
from sgx_iot.sgx.measure import EnclaveImage, Page

SECRET_FILES = [
    "platform-secret.bin",
    "qe-attestation-key.pem",
    "pck.key",
    "processor-ca.key",
    "tcb-signing.key",
    "root-ca.key",
]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> SimPlatform:
    return SimPlatform(tmp_path_factory.mktemp("sim") / "platform")


# --- the interface ---------------------------------------------------------------------------------------


def test_implements_the_platform_interface(platform: SimPlatform) -> None:
    assert isinstance(platform, Platform)
    assert platform.kind == "simulated"
    image, sigstruct = make_enclave()
    runtime = platform.launch(image, sigstruct)
    assert isinstance(runtime, EnclaveRuntime)
    assert runtime.platform_kind == "simulated"


# --- EINIT ------------------------------------------------------------------------------------------------


def test_einit_identity_comes_from_image_and_sigstruct(platform: SimPlatform) -> None:
    image, sigstruct = make_enclave(isv_svn=5, isv_prod_id=11)
    identity = platform.launch(image, sigstruct).identity
    assert identity.mrenclave == image.mrenclave() == sigstruct.enclave_hash
    assert identity.mrsigner == sigstruct.mrsigner
    assert (identity.isv_prod_id, identity.isv_svn) == (11, 5)
    assert identity.attributes == Attributes(SDK_ATTRIBUTES.flags | 0x1, SDK_ATTRIBUTES.xfrm)  # INIT set by EINIT
    assert identity.cpu_svn == platform.store.config.pck.cpu_svn
    assert not identity.debug


def test_einit_refuses_modified_image_naming_both_measurements(platform: SimPlatform) -> None:
    image, sigstruct = make_enclave()
    pages = list(image.pages)
    content = bytearray(pages[0].content)
    content[100] ^= 1
    pages[0] = replace(pages[0], content=bytes(content))
    modified = EnclaveImage(image.size, image.ssa_frame_size, tuple(pages))
    with pytest.raises(PlatformError) as err:
        platform.launch(modified, sigstruct)
    assert err.value.code == "EINIT_MRENCLAVE_MISMATCH"
    assert modified.mrenclave().hex() in str(err.value) and sigstruct.enclave_hash.hex() in str(err.value)


def test_einit_refuses_image_of_another_enclave(platform: SimPlatform) -> None:
    _, sigstruct = make_enclave(b"one")
    with pytest.raises(PlatformError) as err:
        platform.launch(make_image(b"two"), sigstruct)
    assert err.value.code == "EINIT_MRENCLAVE_MISMATCH"


@pytest.mark.parametrize("field", ["isv_svn", "signature", "attributes", "enclave_hash", "modulus"])
def test_einit_refuses_bad_sigstruct_signature(platform: SimPlatform, field: str) -> None:
    image, sigstruct = make_enclave()
    if field == "isv_svn":
        forged = replace(sigstruct, isv_svn=sigstruct.isv_svn + 1)
    elif field == "attributes":
        forged = replace(sigstruct, attributes=Attributes(0x6, 0x3))
    elif field == "enclave_hash":
        forged = replace(sigstruct, enclave_hash=bytes(32))
    else:
        raw = bytearray(getattr(sigstruct, field))
        raw[10] ^= 1
        forged = replace(sigstruct, **{field: bytes(raw)})
    with pytest.raises(PlatformError) as err:
        platform.launch(image, forged)
    assert err.value.code == "EINIT_BAD_SIGSTRUCT"
    assert "SIGSTRUCT" in str(err.value)


def test_einit_refuses_unsigned_sigstruct(platform: SimPlatform) -> None:
    image, sigstruct = make_enclave()
    unsigned = replace(sigstruct, modulus=bytes(384), signature=bytes(384), exponent=0)
    with pytest.raises(PlatformError) as err:
        platform.launch(image, unsigned)
    assert err.value.code == "EINIT_BAD_SIGSTRUCT"


def test_debug_launch_sets_debug_bit_when_mask_allows(platform: SimPlatform) -> None:
    image, sigstruct = make_enclave(mask=SDK_MASK)
    runtime = platform.launch(image, sigstruct, debug=True)
    assert runtime.identity.debug and runtime.identity.attributes.flags == 0x7


def test_debug_launch_refused_when_signer_disabled_debug(platform: SimPlatform) -> None:
    image, sigstruct = make_enclave(mask=NO_DEBUG_MASK)
    with pytest.raises(PlatformError) as err:
        platform.launch(image, sigstruct, debug=True)
    assert err.value.code == "EINIT_ATTRIBUTES"
    assert "debug" in str(err.value)
    assert not platform.launch(image, sigstruct).identity.debug


def test_attributes_outside_mask_refused(platform: SimPlatform) -> None:
    image, sigstruct = make_enclave(attributes=Attributes(0x5, 0x3), mask=SDK_MASK)  # INIT requested and masked
    with pytest.raises(PlatformError) as err:
        platform.launch(image, sigstruct)
    assert err.value.code == "EINIT_ATTRIBUTES"


def test_high_attribute_bits_are_kept(platform: SimPlatform) -> None:
    image, sigstruct = make_enclave(attributes=Attributes(0x0100000000000004, 0x3), mask=SDK_MASK)
    assert platform.launch(image, sigstruct).identity.attributes.flags == 0x0100000000000005


def test_invalid_image_refused(platform: SimPlatform) -> None:
    image, sigstruct = make_enclave()
    broken = EnclaveImage(image.size, image.ssa_frame_size, (Page(0x10, 0x203, bytes(4096)),))
    with pytest.raises(PlatformError) as err:
        platform.launch(broken, sigstruct)
    assert err.value.code == "EINIT_BAD_IMAGE"


# --- the folder -------------------------------------------------------------------------------------------


def test_created_on_first_use_with_private_rights(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "platform"
    SimPlatform(folder)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in SECRET_FILES:
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
    assert len((folder / "platform-secret.bin").read_bytes()) == 32


def test_default_folder_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert default_folder() == tmp_path / "env"
    assert SimPlatform().store.folder == tmp_path / "env"
    monkeypatch.delenv(ENV_VAR)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_folder() == tmp_path / "xdg" / "sgx-iot" / "platform"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_folder() == tmp_path / "home" / ".local" / "share" / "sgx-iot" / "platform"


def test_reopening_keeps_identity_and_force_replaces_it(tmp_path: Path) -> None:
    first = PlatformStore.open(tmp_path / "p")
    again = PlatformStore.init(tmp_path / "p")  # an existing platform is kept
    assert again.secret == first.secret and again.config == first.config
    replaced = PlatformStore.init(tmp_path / "p", force=True)
    assert replaced.secret != first.secret and replaced.config.pck.ppid != first.config.pck.ppid


def test_open_without_create_reports_missing_platform(tmp_path: Path) -> None:
    with pytest.raises(PlatformError) as err:
        PlatformStore.open(tmp_path / "none", create=False)
    assert err.value.code == "PLATFORM_NOT_INITIALISED" and "sgx-iot sim init" in str(err.value)


def test_refuses_to_initialise_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("not a platform")
    with pytest.raises(UsageError):
        PlatformStore.init(tmp_path)


def test_group_readable_secret_refused(tmp_path: Path) -> None:
    PlatformStore.open(tmp_path / "p")
    os.chmod(tmp_path / "p" / "platform-secret.bin", 0o644)
    with pytest.raises(PlatformError) as err:
        PlatformStore.open(tmp_path / "p")
    assert err.value.code == "PLATFORM_INSECURE"


def test_missing_key_file_reported(tmp_path: Path) -> None:
    PlatformStore.open(tmp_path / "p")
    (tmp_path / "p" / "pck.key").unlink()
    with pytest.raises(PlatformError) as err:
        PlatformStore.open(tmp_path / "p")
    assert err.value.code == "PLATFORM_CORRUPT" and "pck.key" in str(err.value)


def test_configuration_changes_persist(tmp_path: Path) -> None:
    store = PlatformStore.open(tmp_path / "p")
    store.set_tcb("OutOfDate", ["INTEL-SA-00615", "INTEL-SA-00615", "INTEL-SA-00657"])
    store.set_pck_revoked(True)
    store.set_validity_days(3)
    reloaded = PlatformStore.open(tmp_path / "p").config.tcb
    assert reloaded.status == "OutOfDate"
    assert reloaded.advisories == ("INTEL-SA-00615", "INTEL-SA-00657")
    assert reloaded.pck_revoked and reloaded.validity_days == 3
    with pytest.raises(UsageError, match="UpToDate"):
        store.set_tcb("Fine")
    with pytest.raises(UsageError):
        store.set_tcb("OutOfDate", ["bad advisory with spaces"])
    with pytest.raises(UsageError):
        store.set_validity_days(0)


def test_secrets_stay_out_of_reprs(platform: SimPlatform) -> None:
    store = platform.store
    image, sigstruct = make_enclave()
    runtime = platform.launch(image, sigstruct)
    texts = [repr(store), repr(platform), repr(runtime), repr(platform.quoting_enclave), repr(store.pki),
             repr(store.config)]  # fmt: skip
    secret_hex = store.secret.hex()
    for text in texts:
        assert secret_hex not in text and "PRIVATE" not in text
        assert "_key=" not in text and "root_key" not in text


def test_open_without_secrets_leaves_them_on_disk(platform: SimPlatform, tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    folder.mkdir(mode=0o700)
    for item in platform.store.folder.iterdir():
        if item.is_file():
            (folder / item.name).write_bytes(item.read_bytes())
            os.chmod(folder / item.name, stat.S_IMODE(item.stat().st_mode))
    (folder / "platform-secret.bin").unlink()  # not read at all, so its absence goes unnoticed
    store = PlatformStore.open(folder, create=False, secrets=False)
    assert store.pki.root_der() == platform.store.pki.root_der()
    for secret in ("secret", "attestation_key"):
        with pytest.raises(PlatformError) as info:
            getattr(store, secret)
        assert info.value.code == "PLATFORM_SECRETS_NOT_LOADED"


def test_platform_json_holds_no_secret(platform: SimPlatform) -> None:
    text = (platform.store.folder / "platform.json").read_text()
    doc = json.loads(text)
    assert doc["note"].startswith("SIMULATED")
    assert platform.store.secret.hex() not in text and "PRIVATE" not in text


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    doc=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6),
        max_leaves=20,
    )
)
def test_config_parser_raises_only_platform_error(doc: object) -> None:
    try:
        PlatformConfig.from_json(json.dumps(doc), Path("platform.json"))
    except PlatformError as exc:
        assert exc.code == "PLATFORM_CORRUPT"


@settings(max_examples=60)
@given(key=st.sampled_from(["tcb", "cpu_svn", "pce_svn", "ppid", "qe_id", "qe_svn", "format", "fmspc"]),
       value=st.none() | st.integers() | st.text(max_size=40) | st.lists(st.integers(), max_size=3))  # fmt: skip
def test_config_parser_with_one_bad_field(key: str, value: object) -> None:
    base = json.loads(_VALID_CONFIG)
    base[key] = value
    try:
        PlatformConfig.from_json(json.dumps(base), Path("platform.json"))
    except PlatformError as exc:
        assert exc.code == "PLATFORM_CORRUPT"


_VALID_CONFIG = PlatformConfig.from_json(
    json.dumps(
        {
            "format": "sgx-iot-sim-platform/1", "created": "2025-01-01T00:00:00Z", "cpu_svn": "00" * 16,
            "pce_svn": 1, "pce_id": "0000", "fmspc": "00" * 6, "ppid": "11" * 16, "sgx_type": 0, "qe_id": "22" * 16,
            "qe_svn": 8,
            "tcb": {"status": "UpToDate", "advisories": [], "pck_revoked": False, "validity_days": 30,
                    "evaluation_data_number": 17},
        }
    ),
    Path("platform.json"),
).to_json()  # fmt: skip


def test_a_file_given_as_platform_folder_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("x")
    for open_it in (lambda p: PlatformStore.open(p), lambda p: PlatformStore.open(p, create=False),
                    lambda p: PlatformStore.init(p)):  # fmt: skip
        with pytest.raises(UsageError, match="is a file, not a simulated platform folder"):
            open_it(tmp_path / "not-a-folder")
