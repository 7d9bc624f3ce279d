"""sgx-iot: trustworthy IoT sensor data from SGX-sealed gateway keys.

Layers (imports point downward only): ``cli`` → ``cloud`` / ``gateway`` / ``audit`` →
``verify`` / ``enclave`` → ``platform`` → ``sgx``. See ``docs/architecture.md``.
"""

__version__ = "0.1.0"
