"""The end-to-end demonstration (``sgx-iot demo``, ``make demo``) and the seed's OpenSSL baseline (``--baseline``).

Both run on embedded defaults in a temporary folder, on the SIMULATED SGX platform, with the cloud on a loopback
port, and return a :class:`DemoResult` (every step with its expected and actual outcome)::

    from sgx_iot.demo import run_demo
    result = run_demo()
    assert result, [step.title for step in result.failures()]
"""

from sgx_iot.demo.baseline import run_baseline
from sgx_iot.demo.flow import run_demo
from sgx_iot.demo.result import DemoResult, Reporter, SilentReporter, Step

__all__ = ["DemoResult", "Reporter", "SilentReporter", "Step", "run_baseline", "run_demo"]
