"""The ``sgx-iot`` command line: thin commands that call one library function and render its result."""
