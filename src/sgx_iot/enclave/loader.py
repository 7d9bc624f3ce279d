"""The enclave process's untrusted loader (the counterpart of the SGX SDK's ``urts``): ``python -m
sgx_iot.enclave.loader --platform DIR --sigstruct FILE [--debug]``.

It builds the enclave image from the very source tree this interpreter imports ``sgx_iot`` from
(:func:`sgx_iot.enclave.image.installed_source_root`), EINITs it on the platform with the SIGSTRUCT, checks that
the trusted modules it then imports are the files it measured, and hands the runtime to the trusted program, which
serves ECALLs on stdin/stdout. The first frame it writes is the answer to an implicit IDENTITY request (the
enclave is ready) or an error response saying why the launch failed (e.g. ``EINIT_MRENCLAVE_MISMATCH``).

Not part of the measured image, like ``urts`` and the platform itself.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sgx_iot.enclave import image
from sgx_iot.enclave.protocol import Channel, ChannelClosed, encode_error, stdio_channel
from sgx_iot.errors import PlatformError, SgxIotError, UsageError
from sgx_iot.sgx.sigstruct import Sigstruct

if TYPE_CHECKING:
    from sgx_iot.enclave.program import EnclaveProgram

LAUNCH_USAGE = "LAUNCH_BAD_INPUT"
"""Error code of a launch refused for unusable input (unreadable SIGSTRUCT, invalid enclave.toml, …)."""


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sgx_iot.enclave.loader", description=__doc__)
    parser.add_argument("--platform", type=Path, default=None, help="simulated platform folder")
    parser.add_argument("--sigstruct", type=Path, required=True, help="the enclave's SIGSTRUCT (1808 bytes)")
    parser.add_argument("--debug", action="store_true", help="launch in debug mode")
    parser.add_argument("--no-create", action="store_true", help="refuse a platform folder that does not exist yet")
    return parser.parse_args(argv)


def launch(platform_folder: Path | None, sigstruct_path: Path, *, debug: bool = False,
           create: bool = True) -> EnclaveProgram:  # fmt: skip
    """EINIT the enclave built from this interpreter's ``sgx_iot`` tree; return the program ready to serve.

    ``create``: initialise the simulated platform folder when it does not exist yet (else ``PlatformError``).
    """
    root = image.installed_source_root()
    build = image.build(root)
    try:
        with sigstruct_path.open("rb") as handle:
            sigstruct = Sigstruct.parse(handle.read(Sigstruct.SIZE + 1))  # bounded read
    except OSError as exc:
        raise UsageError(f"cannot read the SIGSTRUCT {sigstruct_path}: {exc.strerror or exc}") from None
    from sgx_iot.platform.sim import PlatformStore, SimPlatform

    platform = SimPlatform(store=PlatformStore.open(platform_folder, create=create))
    runtime = platform.launch(build.image, sigstruct, debug=debug)
    # Imported only now, after its files were measured.
    from sgx_iot.enclave.program import EnclaveProgram

    _check_imported_from(root)
    return EnclaveProgram(runtime)


def _check_imported_from(root: Path) -> None:
    """Refuse when a trusted module was imported from another file than the one measured."""
    for rel in image.TRUSTED_FILES:
        name = rel.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        module = sys.modules.get(name)
        if module is None or module.__file__ is None:
            continue
        if Path(module.__file__).resolve() != (root / rel).resolve():
            raise PlatformError("LOADER_MODULE_MISMATCH", f"the trusted module {name} was imported from "
                                f"{module.__file__}, not from the measured {root / rel}")


def main(argv: list[str] | None = None) -> int:
    """Run the enclave process until the host closes its stdin. Exit code 0, or 1 if the launch failed."""
    args = _parse_args(argv)
    channel = stdio_channel()
    try:
        program = launch(args.platform, args.sigstruct, debug=args.debug, create=not args.no_create)
    except PlatformError as exc:
        return _refuse(channel, exc.code, exc.message)
    except SgxIotError as exc:  # FormatError, UsageError: unusable SIGSTRUCT or enclave.toml
        return _refuse(channel, LAUNCH_USAGE, str(exc))
    program.run(channel)
    return 0


def _refuse(channel: Channel, code: str, message: str) -> int:
    try:
        channel.send(encode_error(code, message))
    except ChannelClosed:
        pass
    return 1


if __name__ == "__main__":
    sys.exit(main())
