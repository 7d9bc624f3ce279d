"""``python -m sgx_iot``: the same as the ``sgx-iot`` command."""

from sgx_iot.cli.main import main

if __name__ == "__main__":
    main()
