"""Pure SGX formats and algorithms (SGX_FORMATS.md): structures, measurement, SDK enclaves. No I/O, no state."""
