"""The auditor (reference value provider): MRENCLAVE from trusted source, and the reproducibility report.

Public API::

    from sgx_iot.audit import verify_mrenclave, mrenclave_from_source, reference_values, write_reference

    report = verify_mrenclave("https://github.com/org/gateway.git@v1", "enclave.signed.so",
                              ias_report="ias_report.json")
    if report:                                # truthy only when everything matches
        print(report.report_data.public_key.hex())
    print(report.problems())                  # one sentence per failed check
    write_reference("policy.toml", reference_values("./sgx-iot", "enclave.sigstruct"))

Modules: :mod:`~sgx_iot.audit.source` (folder or git URL@rev), :mod:`~sgx_iot.audit.recipe` (build recipes),
:mod:`~sgx_iot.audit.verify`, :mod:`~sgx_iot.audit.report`, :mod:`~sgx_iot.audit.mrenclave`,
:mod:`~sgx_iot.audit.reference`.
"""

from __future__ import annotations

from sgx_iot.audit.mrenclave import SourceMeasurement, mrenclave_from_source
from sgx_iot.audit.reference import ReferenceValues, merge_into_policy, reference_values, write_reference
from sgx_iot.audit.report import ReproducibilityReport
from sgx_iot.audit.verify import verify_mrenclave

__all__ = [
    "ReferenceValues",
    "ReproducibilityReport",
    "SourceMeasurement",
    "merge_into_policy",
    "mrenclave_from_source",
    "reference_values",
    "verify_mrenclave",
    "write_reference",
]
