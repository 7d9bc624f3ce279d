"""The demo's sensor data: a small ``Sensor_Data`` text file shipped with the package (the same shape as the seed's
sample: a header, a start marker, rows of values, an end marker). The demo signs it and uploads it as one reading,
as ``sgx-iot gateway send Sensor_Data`` does.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from sgx_iot._fs import atomic_write

SAMPLE_NAME = "Sensor_Data"


def sample_bytes() -> bytes:
    """The bytes of the packaged ``Sensor_Data`` sample."""
    return resources.files("sgx_iot.demo").joinpath("data", SAMPLE_NAME).read_bytes()


def write_sample(folder: Path) -> Path:
    """Copy the sample into ``folder`` (mode 0644); returns its path."""
    path = Path(folder) / SAMPLE_NAME
    atomic_write(path, sample_bytes(), mode=0o644)
    return path
