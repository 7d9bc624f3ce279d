"""Fixtures for the vector folders that several test modules read (their contents: vectors/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def g06(vectors: Path) -> Path:
    """The original IoT gateway, 2021-06: IAS report, signed enclave, Sensor_Data and its signature (positive)."""
    return vectors / "ias/iot-gateway-2021-06"


@pytest.fixture(scope="module")
def g12(vectors: Path) -> Path:
    """The 2021-12 build of the same gateway (its signed enclave has another MRSIGNER than the report)."""
    return vectors / "ias/iot-gateway-2021-12"


MARKUP = "[/][bold green]verified"
"""Text that rich would read as markup (and refuse: nothing to close): output must show it literally."""


def report_with_markup(g06: Path, out: Path) -> Path:
    """The 2021-06 stored IAS report with :data:`MARKUP` as its id and quote status (so its signature fails)."""
    stored = json.loads((g06 / "ias_report.json").read_bytes())
    stored["body"]["id"] = stored["body"]["isvEnclaveQuoteStatus"] = MARKUP
    out.write_text(json.dumps(stored))
    return out
