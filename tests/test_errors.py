"""The error family renders what the CLI and the service show."""

from sgx_iot.errors import FormatError, SgxIotError, VerificationError


def test_format_error_names_structure_field_and_offset() -> None:
    err = FormatError("sgx_report_t", "mac", 416, "truncated: 3 bytes left, 16 needed")
    assert isinstance(err, SgxIotError)
    assert str(err) == "sgx_report_t.mac at offset 416: truncated: 3 bytes left, 16 needed"
    assert (err.structure, err.field, err.offset) == ("sgx_report_t", "mac", 416)


def test_verification_error_carries_stable_code() -> None:
    err = VerificationError("KEY_BINDING_MISMATCH", "the public key is not the one the enclave reported")
    assert err.code == "KEY_BINDING_MISMATCH"
    assert str(err).startswith("KEY_BINDING_MISMATCH: ")


def test_cli_error_line_is_plain_text_not_markup() -> None:
    import typer
    from sgx_iot.cli._common import err_console, fail

    with err_console.capture() as captured, __import__("pytest").raises(typer.Exit) as exited:
        fail("timestamp [/] and [tool.sgx-iot.audit] are shown as written")
    assert exited.value.exit_code == 2
    assert "timestamp [/] and [tool.sgx-iot.audit] are shown as written" in captured.get()
