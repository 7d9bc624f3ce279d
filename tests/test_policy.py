"""Appraisal policy files: strict parsing with clear errors, defaults, identifiers, the built-in Intel root."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_iot.errors import FormatError
from sgx_iot.verify.policy import (
    DEFAULT_NONCE_LIFETIME,
    INTEL_SGX_ROOT_CA_SHA256,
    Policy,
    intel_sgx_root_ca_der,
)

MRE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
MRS = "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"
MINIMAL = f'[enclave]\nmrenclave = ["{MRE}"]\n'


def self_signed(name: str) -> x509.Certificate:
    import datetime

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .sign(key, hashes.SHA256()))


def error_for(text: str, base_dir: Path | None = None) -> FormatError:
    with pytest.raises(FormatError) as info:
        Policy.from_toml(text, base_dir=base_dir)
    assert info.value.structure == "policy"
    return info.value


def test_builtin_intel_root_matches_vector_fingerprint(vectors: Path) -> None:
    der = intel_sgx_root_ca_der()
    # The fingerprint from vectors/README.md, and the same certificate as the vector (compared, not copied).
    assert hashlib.sha256(der).hexdigest() == "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
    assert INTEL_SGX_ROOT_CA_SHA256 == "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
    assert der == (vectors / "roots" / "Intel_SGX_Root_CA.der").read_bytes()
    cert = x509.load_der_x509_certificate(der)
    assert cert.subject.rfc4514_string().endswith("CN=Intel SGX Root CA")


def test_minimal_policy_defaults() -> None:
    p = Policy.from_toml(MINIMAL)
    assert p.mrenclaves == {bytes.fromhex(MRE)}
    assert p.accepted_tcb_statuses == {"UpToDate", "SWHardeningNeeded"}
    assert p.rejected_advisories == frozenset()
    assert p.allow_debug is False
    assert p.nonce_lifetime == DEFAULT_NONCE_LIFETIME
    assert p.trust_intel is True
    assert [r.sha256 for r in p.trusted_roots()] == [INTEL_SGX_ROOT_CA_SHA256]
    assert p.trusted_roots()[0].der == intel_sgx_root_ca_der()


def test_full_policy_and_roots_by_path_and_fingerprint(tmp_path: Path) -> None:
    cert = self_signed("sgx-iot simulation root")
    (tmp_path / "root.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    der = cert.public_bytes(serialization.Encoding.DER)
    pinned = "ab" * 32
    text = f"""
[trust]
intel = false
roots = ["root.pem"]
root_sha256 = ["{pinned.upper()}"]

[tcb]
accepted_statuses = ["UpToDate"]
rejected_advisories = ["INTEL-SA-00615"]
allow_debug = true

[enclave]
mrsigner = ["{MRS}"]
isv_prod_id = 7
min_isv_svn = 3

[nonce]
lifetime_seconds = 60
"""
    p = Policy.from_toml(text, base_dir=tmp_path)
    assert [r.sha256 for r in p.trusted_roots()] == [hashlib.sha256(der).hexdigest(), pinned]
    assert p.trusted_roots()[0].der == der and p.trusted_roots()[1].der is None
    assert (p.isv_prod_id, p.min_isv_svn, p.nonce_lifetime, p.allow_debug) == (7, 3, 60, True)
    assert p.rejected_advisories == {"INTEL-SA-00615"}
    assert p.mrsigners == {bytes.fromhex(MRS)} and not p.mrenclaves


def test_policy_id_is_hash_of_canonical_form() -> None:
    a = Policy.from_toml(MINIMAL)
    b = Policy.from_toml(f'# comment\n[nonce]\nlifetime_seconds = 300\n[enclave]\nmrenclave = ["{MRE.upper()}"]\n'
                         '[tcb]\naccepted_statuses = ["SWHardeningNeeded", "UpToDate"]\n')
    c = Policy.from_toml(MINIMAL + "[tcb]\naccepted_statuses = [\"UpToDate\"]\n")
    assert a.id == b.id != c.id
    assert a.id.startswith("sha256:") and len(a.id) == 7 + 64
    import json

    canonical = json.dumps(a.canonical(), sort_keys=True, separators=(",", ":")).encode()
    assert a.id == "sha256:" + hashlib.sha256(canonical).hexdigest()


def test_to_toml_round_trips() -> None:
    p = Policy(mrenclaves=frozenset({bytes(32), bytes([1]) * 32}), mrsigners=frozenset({bytes([2]) * 32}),
               isv_prod_id=0, min_isv_svn=2, rejected_advisories=frozenset({"INTEL-SA-1"}), nonce_lifetime=30)
    q = Policy.from_toml(p.to_toml())
    assert q == p and q.id == p.id


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("[enclave]\nmrenclave = [\"zz\"]\n", "enclave.mrenclave[0]", "not hexadecimal"),
        ("[enclave]\nmrenclave = [\"abcd\"]\n", "enclave.mrenclave[0]", "32 bytes"),
        (MINIMAL + "[tcb]\naccepted_statuses = [\"Revoked\"]\n", "tcb.accepted_statuses", "Revoked"),
        (MINIMAL + "[tcb]\naccepted_statuses = [\"Fine\"]\n", "tcb.accepted_statuses", "'Fine'"),
        (MINIMAL + "[tcb]\nallow_debug = \"yes\"\n", "tcb.allow_debug", "true or false"),
        (MINIMAL + "[tcb]\nallow_dbg = true\n", "tcb.allow_dbg", "unknown key"),
        (MINIMAL + "[nonce]\nlifetime_seconds = 0\n", "nonce.lifetime_seconds", "between"),
        (MINIMAL + "[nonce]\nlifetime_seconds = 1.5\n", "nonce.lifetime_seconds", "integer"),
        (MINIMAL + "[verifier]\nx = 1\n", "verifier", "unknown key"),
        ("tcb = 3\n" + MINIMAL, "tcb", "must be a table"),
        ("[enclave]\nisv_prod_id = 0\n", "enclave", "no reference values"),
        (f"[enclave]\nmrsigner = [\"{MRS}\"]\n", "enclave.isv_prod_id", "required with mrsigner"),
        (MINIMAL.replace("[enclave]", "[enclave]\nisv_prod_id = 70000"), "enclave.isv_prod_id", "between"),
        (MINIMAL + "[trust]\nintel = false\n", "trust", "no trust root"),
        (MINIMAL + "[trust]\nroots = [\"missing.pem\"]\n", "trust.roots[0]", "cannot read"),
        (MINIMAL + "[trust]\nroot_sha256 = [1]\n", "trust.root_sha256", "list of non-empty strings"),
        ("[enclave\n", "(document)", "not valid TOML"),
    ],
)
def test_bad_policies_name_the_key(text: str, field: str, words: str, tmp_path: Path) -> None:
    err = error_for(text, tmp_path)
    assert err.field == field, str(err)
    assert words in str(err)


def test_root_file_that_is_not_a_certificate(tmp_path: Path) -> None:
    (tmp_path / "root.pem").write_text("hello")
    err = error_for(MINIMAL + "[trust]\nroots = [\"root.pem\"]\n", tmp_path)
    assert err.field == "trust.roots[0]" and "not a PEM or DER" in str(err)


def test_load_reads_relative_roots(tmp_path: Path) -> None:
    (tmp_path / "policy.toml").write_text(MINIMAL)
    assert Policy.load(tmp_path / "policy.toml") == Policy.from_toml(MINIMAL)
    with pytest.raises(FormatError):
        Policy.from_toml(b"\xff\xfe")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_policy_text_raises_only_format_error(text: str) -> None:
    try:
        Policy.from_toml(text)
    except FormatError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["trust", "tcb", "enclave", "nonce", "x"]),
                       st.dictionaries(st.text(max_size=12), st.one_of(st.integers(), st.text(max_size=70),
                                                                       st.booleans(), st.lists(st.text(max_size=70))),
                                       max_size=4), max_size=4))
def test_fuzz_policy_tables_raise_only_format_error(doc: dict) -> None:
    try:
        Policy.from_dict(doc)
    except FormatError:
        pass
