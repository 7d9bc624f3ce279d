"""Build recipes: how the audited source says its enclave is rebuilt, and running that build.

A source tree describes its enclave in one of these places (first found wins):

1. ``.auditee.yml`` (or ``.auditee.yaml``), the format of the ``auditee`` tool; ``enclaves[0]`` is used::

       enclaves:
         - name: sgx-iot
           build:
             builder: nix-build            # or: docker, or a command line such as "make enclave.so"
             build_kwargs: {file: default.nix}
             output_dir: result/bin
             enclave_file: enclave.unsigned.so
           enclave_config: enclave/enclave.config.xml

2. ``sgx-iot-audit.toml``, sgx-iot's own format, with the same keys in an ``[audit]`` table, plus ``kind``::

       [audit]
       kind = "sdk"                        # an Intel SGX SDK enclave ("sgx-iot" for sgx-iot's own enclave)
       name = "sgx-iot"
       enclave_config = "enclave/enclave.config.xml"
       [audit.build]
       builder = "nix-build"
       output_dir = "result/bin"
       enclave_file = "enclave.unsigned.so"
       timeout = 1800                      # seconds (optional)
       [audit.build.build_kwargs]
       file = "default.nix"

3. ``pyproject.toml`` with the same table as ``[tool.sgx-iot.audit]``.
4. None of them, but the tree holds sgx-iot's enclave program (``src/sgx_iot/enclave`` or ``sgx_iot/enclave``):
   kind ``sgx-iot``, which needs no build (its image is defined from the source files).

Builders: ``nix-build`` runs ``nix-build FILE`` (``build_kwargs.file``, default ``default.nix``); ``docker`` runs
``docker build --output type=local,dest=OUTPUT_DIR`` with ``build_kwargs`` ``context_path``, ``file``, ``target``,
``build_args``; any other value is a command line, split like a shell would (no shell features: write
``sh -c '…'`` for those), run in the source root after ``output_dir`` has been created. Paths in a recipe are
relative to the source root and may not leave it.
"""

from __future__ import annotations

import math
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from sgx_iot.errors import FormatError, UsageError

KIND_SDK = "sdk"
KIND_SGX_IOT = "sgx-iot"
DEFAULT_BUILD_TIMEOUT = 1800.0
MAX_RECIPE_BYTES = 64 * 1024
AUDITEE_FILES = (".auditee.yml", ".auditee.yaml")
SGX_IOT_AUDIT_FILE = "sgx-iot-audit.toml"
_ENCLAVE_KEYS = {"name", "kind", "build", "enclave_config"}
_BUILD_KEYS = {"builder", "build_kwargs", "output_dir", "enclave_file", "enclave_config", "timeout"}
_DOCKER_KWARGS = {"context_path", "file", "target", "build_args"}
_NIX_KWARGS = {"file", "attr"}
_TAIL_LINES = 20


class BuildError(UsageError):
    """The recipe's build could not run or failed; carries the end of its output for :meth:`diagnostics`."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output

    def diagnostics(self) -> str:
        tail = "\n".join(self.output.splitlines()[-_TAIL_LINES:])
        return f"{self}\n--- last lines of the build output ---\n{tail}" if tail else str(self)


@dataclass(frozen=True)
class BuildRecipe:
    """How to produce the unsigned enclave: the builder, its arguments, and where the output lands."""

    builder: str
    output_dir: str
    enclave_file: str
    build_kwargs: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = DEFAULT_BUILD_TIMEOUT

    @property
    def tool(self) -> str:
        """The executable the build needs (``nix-build``, ``docker`` or the command's first word)."""
        if self.builder in ("nix-build", "docker"):
            return self.builder
        return shlex.split(self.builder)[0]

    def argv(self, root: Path) -> list[str]:
        """The command line that builds the enclave from the source tree at ``root``."""
        if self.builder == "nix-build":
            argv = ["nix-build", str(self.build_kwargs.get("file", "default.nix"))]
            if "attr" in self.build_kwargs:
                argv += ["-A", str(self.build_kwargs["attr"])]
            return argv
        if self.builder == "docker":
            argv = ["docker", "build", "--output", f"type=local,dest={root / self.output_dir}"]
            if "file" in self.build_kwargs:
                argv += ["--file", str(self.build_kwargs["file"])]
            if "target" in self.build_kwargs:
                argv += ["--target", str(self.build_kwargs["target"])]
            for key, value in dict(self.build_kwargs.get("build_args", {})).items():
                argv += ["--build-arg", f"{key}={value}"]
            return [*argv, str(self.build_kwargs.get("context_path", "."))]
        return shlex.split(self.builder)

    def describe(self) -> str:
        """One line for reports: the command and the file it yields."""
        return f"{self.builder} → {PurePosixPath(self.output_dir) / self.enclave_file}"


@dataclass(frozen=True)
class Recipe:
    """What a source tree says about its enclave: its kind, the build (SDK enclaves) and its configuration XML."""

    kind: str
    origin: str
    name: str | None = None
    build: BuildRecipe | None = None
    enclave_config: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (recorded in reports)."""
        return {
            "kind": self.kind,
            "origin": self.origin,
            "name": self.name,
            "build": self.build.describe() if self.build else None,
            "enclave_config": self.enclave_config,
        }


def load_recipe(root: Path) -> Recipe:
    """Find and parse the build recipe of the source tree at ``root`` (see the module docstring for the order).

    Raises ``FormatError`` for a malformed recipe and ``UsageError`` when the tree has none and is not sgx-iot.
    """
    for name in AUDITEE_FILES:
        path = root / name
        if path.is_file():
            return parse_auditee_yaml(_read_text(path), origin=name)
    path = root / SGX_IOT_AUDIT_FILE
    if path.is_file():
        doc = _load_toml(path)
        if "audit" not in doc:
            raise FormatError(SGX_IOT_AUDIT_FILE, "audit", None, "missing [audit] table")
        return parse_recipe_table(doc["audit"], origin=SGX_IOT_AUDIT_FILE)
    path = root / "pyproject.toml"
    if path.is_file():
        table = _load_toml(path).get("tool", {}).get("sgx-iot", {}).get("audit")
        if table is not None:
            return parse_recipe_table(table, origin="pyproject.toml [tool.sgx-iot.audit]")
    if (root / "src" / "sgx_iot" / "enclave").is_dir() or (root / "sgx_iot" / "enclave").is_dir():
        return Recipe(KIND_SGX_IOT, origin="sgx-iot source tree")
    raise UsageError(
        f"{root} has no build recipe ({', '.join(AUDITEE_FILES)}, {SGX_IOT_AUDIT_FILE} or [tool.sgx-iot.audit]); "
        "add one, or rebuild the enclave yourself and pass it with --unsigned FILE"
    )


def parse_auditee_yaml(text: str, *, origin: str = ".auditee.yml") -> Recipe:
    """Parse an ``auditee`` configuration; only ``enclaves[0]`` is used (as auditee itself does)."""
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is a declared dependency
        raise UsageError("reading .auditee.yml needs PyYAML; install it (pip install pyyaml)") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FormatError(origin, "(document)", None, f"not YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise FormatError(origin, "(document)", None, "not a recipe: nested too deeply") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("enclaves"), list) or not doc["enclaves"]:
        raise FormatError(origin, "enclaves", None, "must be a non-empty list of enclaves")
    return parse_recipe_table(doc["enclaves"][0], origin=origin, default_kind=KIND_SDK, where="enclaves[0]")


def parse_recipe_table(table: Any, *, origin: str, default_kind: str | None = None, where: str = "audit") -> Recipe:
    """Parse one enclave entry (the ``[audit]`` table, or ``enclaves[0]`` of ``.auditee.yml``)."""
    table = _mapping(table, origin, where, _ENCLAVE_KEYS)
    kind = table.get("kind", default_kind if default_kind else (KIND_SDK if "build" in table else KIND_SGX_IOT))
    if kind not in (KIND_SDK, KIND_SGX_IOT):
        raise FormatError(origin, f"{where}.kind", None, f"must be {KIND_SDK!r} or {KIND_SGX_IOT!r}, got {kind!r}")
    name = _optional_str(table, "name", origin, where)
    enclave_config = _optional_path(table, "enclave_config", origin, where)
    build = None
    if "build" in table:
        if kind == KIND_SGX_IOT:
            raise FormatError(origin, f"{where}.build", None,
                              "sgx-iot's own enclave is measured from source, not built")
        build_table = _mapping(table["build"], origin, f"{where}.build", _BUILD_KEYS)
        # auditee puts enclave_config beside `build`; accept it inside too, but not in both places.
        inner_config = _optional_path(build_table, "enclave_config", origin, f"{where}.build")
        if inner_config is not None and enclave_config is not None:
            raise FormatError(origin, f"{where}.build.enclave_config", None, "given twice (also beside build)")
        enclave_config = enclave_config or inner_config
        build = _parse_build(build_table, origin, f"{where}.build")
    elif kind == KIND_SDK:
        raise FormatError(origin, f"{where}.build", None, "missing: an SDK enclave needs a build recipe")
    return Recipe(kind, origin, name, build, enclave_config)


def run_build(recipe: BuildRecipe, root: Path) -> Path:
    """Run the build in ``root`` and return the unsigned enclave file it produced.

    Refuses (``BuildError``, exit 2) when the build tool is not installed — telling to rebuild elsewhere and pass
    ``--unsigned FILE`` —, when the build fails or times out (with the end of its output), or when the expected
    file is missing afterwards. The output is captured, never echoed.
    """
    if shutil.which(recipe.tool) is None:
        raise BuildError(
            f"the build recipe needs {recipe.tool!r}, which is not installed here; rebuild the enclave where it "
            "is and pass the unsigned file with --unsigned FILE"
        )
    if recipe.builder != "nix-build":  # nix-build makes its own `result` symlink
        (root / recipe.output_dir).mkdir(parents=True, exist_ok=True)
    argv = recipe.argv(root)
    try:
        done = subprocess.run(argv, cwd=root, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace", timeout=recipe.timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        output = _text(exc.stdout) + _text(exc.stderr)
        raise BuildError(f"the build ({shlex.join(argv)}) took longer than {recipe.timeout:.0f} s", output) from None
    except OSError as exc:
        raise BuildError(f"the build ({shlex.join(argv)}) could not start: {exc.strerror or exc}") from None
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise BuildError(f"the build ({shlex.join(argv)}) failed with exit status {done.returncode}", output)
    produced = root / recipe.output_dir / recipe.enclave_file
    if not produced.is_file():
        raise BuildError(
            f"the build succeeded but did not produce {PurePosixPath(recipe.output_dir) / recipe.enclave_file}; "
            "check output_dir and enclave_file in the recipe", output)
    return produced


def _parse_build(table: Mapping[str, Any], origin: str, where: str) -> BuildRecipe:
    builder = table.get("builder")
    if not isinstance(builder, str) or not builder.strip():
        raise FormatError(origin, f"{where}.builder", None, "must be 'nix-build', 'docker' or a command line")
    try:
        words = shlex.split(builder)
    except ValueError as exc:
        raise FormatError(origin, f"{where}.builder", None, f"not a command line: {exc}") from None
    if not words:
        raise FormatError(origin, f"{where}.builder", None, "is empty")
    kwargs = table.get("build_kwargs") or {}
    allowed = {"nix-build": _NIX_KWARGS, "docker": _DOCKER_KWARGS}.get(builder, set())
    kwargs = _mapping(kwargs, origin, f"{where}.build_kwargs", allowed)
    if "build_args" in kwargs and not isinstance(kwargs["build_args"], dict):
        raise FormatError(origin, f"{where}.build_kwargs.build_args", None, "must be a mapping")
    for key in ("file", "context_path"):
        if key in kwargs:
            _check_relative(kwargs[key], origin, f"{where}.build_kwargs.{key}")
    output_dir = _optional_path(table, "output_dir", origin, where) or "."
    enclave_file = _optional_path(table, "enclave_file", origin, where)
    if enclave_file is None:
        raise FormatError(origin, f"{where}.enclave_file", None, "missing: name the unsigned enclave the build makes")
    timeout = table.get("timeout", DEFAULT_BUILD_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < math.inf:
        raise FormatError(origin, f"{where}.timeout", None, "must be a positive number of seconds")
    return BuildRecipe(builder.strip(), output_dir, enclave_file, dict(kwargs), float(timeout))


def _mapping(value: Any, origin: str, where: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FormatError(origin, where, None, "must be a mapping")
    unknown = sorted(str(key) for key in value if key not in allowed)
    if unknown:
        raise FormatError(origin, f"{where}.{unknown[0]}", None, f"unknown key (known: {', '.join(sorted(allowed))})")
    return value


def _optional_str(table: Mapping[str, Any], key: str, origin: str, where: str) -> str | None:
    value = table.get(key)
    if value is not None and not isinstance(value, str):
        raise FormatError(origin, f"{where}.{key}", None, "must be a string")
    return value


def _optional_path(table: Mapping[str, Any], key: str, origin: str, where: str) -> str | None:
    value = _optional_str(table, key, origin, where)
    if value is not None:
        _check_relative(value, origin, f"{where}.{key}")
    return value


def _check_relative(value: Any, origin: str, where: str) -> None:
    """A recipe path is relative and stays in the source tree (checked lexically: ``result`` may be a symlink)."""
    if not isinstance(value, str) or not value:
        raise FormatError(origin, where, None, "must be a non-empty relative path")
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts:
        raise FormatError(origin, where, None, f"{value!r} must be a relative path inside the source tree")


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if len(data) > MAX_RECIPE_BYTES:
        raise FormatError(path.name, "(document)", None, f"larger than {MAX_RECIPE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(path.name, "(document)", exc.start, "not UTF-8 text") from None


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(_read_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise FormatError(path.name, "(document)", None, f"not TOML: {exc}") from None
    except RecursionError:
        raise FormatError(path.name, "(document)", None, "not TOML: nested too deeply") from None


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
