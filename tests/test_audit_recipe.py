"""Build recipes: ``.auditee.yml``, ``sgx-iot-audit.toml``, ``[tool.sgx-iot.audit]``, and running the build."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_iot.audit.recipe import (
    KIND_SDK,
    KIND_SGX_IOT,
    BuildError,
    BuildRecipe,
    load_recipe,
    parse_auditee_yaml,
    parse_recipe_table,
    run_build,
)
from sgx_iot.errors import FormatError, SgxIotError, UsageError

AUDITEE_EXAMPLE = """\
enclaves:
  - name: sgx-iot
    build:
      builder: nix-build
      build_kwargs:
        file: default.nix
      output_dir: result/bin
      enclave_file: enclave.unsigned.so
    enclave_config: enclave/enclave.config.xml
"""


def test_auditee_documented_example() -> None:
    recipe = parse_auditee_yaml(AUDITEE_EXAMPLE)
    assert recipe.kind == KIND_SDK
    assert recipe.name == "sgx-iot"
    assert recipe.enclave_config == "enclave/enclave.config.xml"
    assert recipe.build is not None
    assert recipe.build.builder == "nix-build"
    assert recipe.build.argv(Path("/src")) == ["nix-build", "default.nix"]
    assert (recipe.build.output_dir, recipe.build.enclave_file) == ("result/bin", "enclave.unsigned.so")


def test_docker_recipe_argv() -> None:
    recipe = parse_auditee_yaml(
        "enclaves:\n  - build:\n      builder: docker\n      build_kwargs: {target: export-stage, file: Dockerfile,"
        " build_args: {SGX_MODE: HW}}\n      output_dir: out\n      enclave_file: Enclave.so\n"
        "    enclave_config: Enclave/Enclave.config.xml\n")
    assert recipe.build is not None
    assert recipe.build.argv(Path("/src")) == [
        "docker", "build", "--output", "type=local,dest=/src/out", "--file", "Dockerfile", "--target",
        "export-stage", "--build-arg", "SGX_MODE=HW", ".",
    ]


def test_plain_command_recipe() -> None:
    recipe = parse_auditee_yaml("enclaves:\n  - build:\n      builder: make -C enclave 'CFLAGS=-O2 -g'\n"
                                "      enclave_file: enclave.so\n")
    assert recipe.build is not None
    assert recipe.build.tool == "make"
    assert recipe.build.argv(Path("/src")) == ["make", "-C", "enclave", "CFLAGS=-O2 -g"]
    assert recipe.build.output_dir == "."


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("not: [yaml", "(document)"),
        ("enclaves: []\n", "enclaves"),
        ("- a\n", "enclaves"),
        ("enclaves:\n  - name: x\n", "enclaves[0].build"),
        ("enclaves:\n  - build: {builder: make}\n", "enclaves[0].build.enclave_file"),
        ("enclaves:\n  - build: {builder: make, enclave_file: /etc/passwd}\n", "enclaves[0].build.enclave_file"),
        ("enclaves:\n  - build: {builder: make, enclave_file: a.so, output_dir: ../up}\n",
         "enclaves[0].build.output_dir"),
        ("enclaves:\n  - build: {builder: make, enclave_file: a.so, colour: red}\n", "enclaves[0].build.colour"),
        ("enclaves:\n  - build: {builder: docker, enclave_file: a.so, build_kwargs: {network: host}}\n",
         "enclaves[0].build.build_kwargs.network"),
        ("enclaves:\n  - build: {builder: '', enclave_file: a.so}\n", "enclaves[0].build.builder"),
        ("enclaves:\n  - build: {builder: \"make 'x\", enclave_file: a.so}\n", "enclaves[0].build.builder"),
        ("enclaves:\n  - build: {builder: make, enclave_file: a.so, timeout: -1}\n", "enclaves[0].build.timeout"),
        ("enclaves:\n  - kind: gramine\n", "enclaves[0].kind"),
        ("enclaves:\n  - build: {builder: make, enclave_file: a.so, timeout: .nan}\n", "enclaves[0].build.timeout"),
        ("enclaves:\n  - oops\n", "enclaves[0]"),
    ],
)
def test_malformed_auditee_yaml(text: str, field: str) -> None:
    with pytest.raises(FormatError) as info:
        parse_auditee_yaml(text)
    assert info.value.field == field


@settings(max_examples=200)
@given(st.text(max_size=200))
def test_auditee_yaml_fuzz_raises_only_project_errors(text: str) -> None:
    try:
        parse_auditee_yaml(text)
    except SgxIotError:
        pass


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["kind", "name", "build", "enclave_config", "builder", "build_kwargs",
                                       "output_dir", "enclave_file", "timeout", "file", "x"]), children, max_size=6),
    max_leaves=20,
)


@settings(max_examples=300)
@given(_JSONISH)
def test_recipe_table_fuzz_raises_only_format_errors(table: object) -> None:
    try:
        parse_recipe_table(table, origin="fuzz")
    except FormatError:
        pass


def test_sgx_iot_toml_and_pyproject(tmp_path: Path) -> None:
    table = ('kind = "sdk"\nname = "gw"\nenclave_config = "e.xml"\n[{p}.build]\nbuilder = "make"\n'
             'enclave_file = "enclave.so"\ntimeout = 60\n')
    (tmp_path / "sgx-iot-audit.toml").write_text("[audit]\n" + table.format(p="audit"))
    recipe = load_recipe(tmp_path)
    assert (recipe.kind, recipe.name, recipe.enclave_config, recipe.origin) == (KIND_SDK, "gw", "e.xml",
                                                                               "sgx-iot-audit.toml")
    assert recipe.build is not None and recipe.build.timeout == 60.0
    (tmp_path / "sgx-iot-audit.toml").unlink()
    (tmp_path / "pyproject.toml").write_text("[tool.sgx-iot.audit]\n" + table.format(p="tool.sgx-iot.audit"))
    assert load_recipe(tmp_path).origin == "pyproject.toml [tool.sgx-iot.audit]"


def test_auditee_yaml_wins_and_sgx_iot_tree_is_detected(tmp_path: Path) -> None:
    (tmp_path / "src" / "sgx_iot" / "enclave").mkdir(parents=True)
    assert load_recipe(tmp_path).kind == KIND_SGX_IOT
    (tmp_path / ".auditee.yml").write_text(AUDITEE_EXAMPLE)
    assert load_recipe(tmp_path).kind == KIND_SDK


def test_no_recipe_is_a_usage_error_pointing_to_unsigned(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--unsigned FILE"):
        load_recipe(tmp_path)


def test_toml_errors(tmp_path: Path) -> None:
    (tmp_path / "sgx-iot-audit.toml").write_text("[audit\n")
    with pytest.raises(FormatError, match="not TOML"):
        load_recipe(tmp_path)
    (tmp_path / "sgx-iot-audit.toml").write_text("[other]\n")
    with pytest.raises(FormatError, match="missing \\[audit\\]"):
        load_recipe(tmp_path)
    (tmp_path / "sgx-iot-audit.toml").write_text('[audit]\nkind = "sgx-iot"\n[audit.build]\nbuilder = "make"\n')
    with pytest.raises(FormatError, match="measured from source"):
        load_recipe(tmp_path)


@pytest.mark.parametrize(
    ("name", "text"),
    [(".auditee.yml", "[" * 30_000), ("sgx-iot-audit.toml", "a = " + "[" * 30_000),
     ("pyproject.toml", "a = " + "[" * 30_000)],
)
def test_deeply_nested_recipe_is_a_format_error(tmp_path: Path, name: str, text: str) -> None:
    """The YAML and TOML parsers raise RecursionError on deep nesting; it used to escape as a traceback."""
    (tmp_path / name).write_text(text)
    with pytest.raises(FormatError, match="nested too deeply"):
        load_recipe(tmp_path)


def _recipe(builder: str, **kwargs: object) -> BuildRecipe:
    return BuildRecipe(builder=builder, output_dir=str(kwargs.pop("output_dir", "out")),
                       enclave_file=str(kwargs.pop("enclave_file", "enclave.so")), **kwargs)  # type: ignore[arg-type]


def test_run_plain_command_build(tmp_path: Path) -> None:
    (tmp_path / "built.so").write_bytes(b"\x7fELF rebuilt")
    produced = run_build(_recipe("cp built.so out/enclave.so"), tmp_path)
    assert produced == tmp_path / "out" / "enclave.so"
    assert produced.read_bytes() == b"\x7fELF rebuilt"


@pytest.mark.parametrize("builder", ["nix-build", "no-such-tool-xyz --flag"])
def test_missing_tool_refuses_and_suggests_unsigned(tmp_path: Path, builder: str) -> None:
    if shutil.which(builder.split()[0]):
        pytest.skip(f"{builder} is installed here")
    expected = "'(nix-build|no-such-tool-xyz)', which is not installed here.*--unsigned FILE"
    with pytest.raises(BuildError, match=expected):
        run_build(_recipe(builder), tmp_path)


def test_failed_build_keeps_the_output_tail(tmp_path: Path) -> None:
    script = "import sys; print('compiling enclave.c'); sys.exit('enclave.c:3: error: boom')"
    with pytest.raises(BuildError, match="failed with exit status 1") as info:
        run_build(_recipe(f"{sys.executable} -c \"{script}\""), tmp_path)
    assert "enclave.c:3: error: boom" in info.value.diagnostics()
    assert "compiling enclave.c" in info.value.diagnostics()


def test_build_without_the_expected_file(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="did not produce out/enclave.so"):
        run_build(_recipe("true"), tmp_path)


def test_build_timeout(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="took longer than"):
        run_build(_recipe(f"{sys.executable} -c 'import time; time.sleep(30)'", timeout=0.5), tmp_path)
