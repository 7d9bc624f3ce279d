"""`sgx-iot inspect`: a single command (registered by :mod:`sgx_iot.cli.main` from :func:`run`)."""

from __future__ import annotations

import typer


def run() -> None:
    """Not yet available."""
    raise typer.Exit(2)
