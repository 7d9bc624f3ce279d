"""The one error family of sgx-iot.

Every error the project raises on purpose derives from :class:`SgxIotError`; parsers raise only
:class:`FormatError`, verifiers raise :class:`VerificationError` with a stable machine code. The CLI maps
``FormatError``/``UsageError`` to exit code 2 and ``VerificationError`` to exit code 1; the HTTP service maps
them to 4xx responses carrying :attr:`VerificationError.code`.
"""

from __future__ import annotations


class SgxIotError(Exception):
    """Base of every deliberate sgx-iot error.

    ``str(err)`` is one sentence a person can act on; :meth:`diagnostics` may add what to do next.
    """

    def diagnostics(self) -> str:
        """A longer explanation (default: the message itself)."""
        return str(self)


class UsageError(SgxIotError):
    """The caller asked for something impossible or gave unusable input (CLI exit code 2)."""


class FormatError(SgxIotError):
    """Bytes (or text) that do not parse as the structure they claim to be.

    Names the structure, the field and the byte offset where parsing stopped, so a person can look there.
    """

    def __init__(self, structure: str, field: str, offset: int | None, reason: str) -> None:
        self.structure = structure
        self.field = field
        self.offset = offset
        self.reason = reason
        where = f" at offset {offset}" if offset is not None else ""
        super().__init__(f"{structure}.{field}{where}: {reason}")


class CodedError(SgxIotError):
    """An error with a stable upper-case ``code`` that machines match on and a ``message`` for people;
    ``str(err)`` is ``"CODE: message"``."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class VerificationError(CodedError):
    """Evidence, a signature or a policy check failed.

    ``code`` is a stable upper-case identifier (``KEY_BINDING_MISMATCH``, ``BAD_SIGNATURE``, …) that machines
    match on; the message is a sentence for people.
    """


class PlatformError(CodedError):
    """The TEE platform refused an operation (EINIT, EGETKEY, quoting) or is unusable."""
