"""Pinned Intel trust roots for legacy (EPID/IAS) evidence.

The "Intel SGX Attestation Report Signing CA" is the self-signed RSA-3072 root (2016-11-14 → 2049-12-31,
SHA-256 fingerprint ``7b42e41e…40735d``) that certifies the key signing every IAS attestation verification
report. It is pinned here, as DER, instead of being taken from the ``X-IASReport-Signing-Certificate`` header,
because whoever hands us a report also controls that header.

(The DCAP root, "Intel SGX Root CA", is embedded in ``dcap-qvl`` and used by :mod:`sgx_iot.verify.dcap`.)
:func:`common_name` and :func:`fingerprint_sha256` are how verifiers name a certificate in their messages.
"""

from __future__ import annotations

import base64
import functools

from cryptography import x509
from cryptography.hazmat.primitives import hashes

IAS_REPORT_SIGNING_CA_SHA256 = "7b42e41ec43b91db834a065de4f98a13c44d695570e839cfa8921e584e40735d"

_IAS_REPORT_SIGNING_CA_DER_B64 = (
    "MIIFSzCCA7OgAwIBAgIJANEHdl0yo7CUMA0GCSqGSIb3DQEBCwUAMH4xCzAJBgNVBAYTAlVTMQswCQYDVQQIDAJDQTEUMBIGA1UE"
    "BwwLU2FudGEgQ2xhcmExGjAYBgNVBAoMEUludGVsIENvcnBvcmF0aW9uMTAwLgYDVQQDDCdJbnRlbCBTR1ggQXR0ZXN0YXRpb24g"
    "UmVwb3J0IFNpZ25pbmcgQ0EwIBcNMTYxMTE0MTUzNzMxWhgPMjA0OTEyMzEyMzU5NTlaMH4xCzAJBgNVBAYTAlVTMQswCQYDVQQI"
    "DAJDQTEUMBIGA1UEBwwLU2FudGEgQ2xhcmExGjAYBgNVBAoMEUludGVsIENvcnBvcmF0aW9uMTAwLgYDVQQDDCdJbnRlbCBTR1gg"
    "QXR0ZXN0YXRpb24gUmVwb3J0IFNpZ25pbmcgQ0EwggGiMA0GCSqGSIb3DQEBAQUAA4IBjwAwggGKAoIBgQCfPGR+tXc8u1EtJzLA"
    "10Feu1Wg+p7eLmSRmeaCHbkQ1TF3Nwl3RmpqXkeGzNLd69QUnWovYyVSndEMyYc3sHecGgfinEehrgBJSEdsSJ9FpaFdesjsxqzG"
    "Ra20PYdnnfWcCTvFoulpbFR4VBuXnnVLVzkUvlXTL/TAnd8nIZk0zZkFJ7P5LtePvykkar7LcSQO85wtcQe0R1Raf/sQ6wYKaKmF"
    "gCGeNpEJUmg4ktal4qgIAxk+QHUxQE42sxViN5mqglB0QJdUot/o9a/V/mMeH8KvOAiQbyinkNndn+Bgk5sSV5DFgF0DffVqmVMb"
    "lt5p3jPtImzBIH0QQrXJq39AT8cRwP5HafuVeLHcDsRp6hol4P+ZFIhu8mmbI1u0hH3W/0C2BuYXB5PC+5izFFh/nP0lc2Lf6rEL"
    "O9LZdnOhpL1ExFOq9H/B8tPQ84T3Sgb4nAifDabNt/zu6MmCGo5U8lwEFtGMRoOaX4AS+909x00lYnmtwsDVWv9vBiJCXRsCAwEA"
    "AaOByTCBxjBgBgNVHR8EWTBXMFWgU6BRhk9odHRwOi8vdHJ1c3RlZHNlcnZpY2VzLmludGVsLmNvbS9jb250ZW50L0NSTC9TR1gv"
    "QXR0ZXN0YXRpb25SZXBvcnRTaWduaW5nQ0EuY3JsMB0GA1UdDgQWBBR4Q3t2pn680K9+QjfrNXw7hwFRPDAfBgNVHSMEGDAWgBR4"
    "Q3t2pn680K9+QjfrNXw7hwFRPDAOBgNVHQ8BAf8EBAMCAQYwEgYDVR0TAQH/BAgwBgEB/wIBADANBgkqhkiG9w0BAQsFAAOCAYEA"
    "eF8tYMXICvQqeXYQITkV2oLJsp6J4JAqJabHWxYJHGirIEqucRiJSSx+HjIJEUVaj8E0QjEud6Y5lNmXlcjqRXaCPOqK0eGRz6hi"
    "+ripMtPZsFNaBwLQVV905SDjAzDzNIDnrcnXyB4gcDFCvwDFKKgLRjOB/WAqgscDUoGq5ZVizLUzTqiQPmULAQaB9c6Oti6snEFJ"
    "iCQ67JLyW/E83/frzCmO5Ru6WjU4tmsmy8RaUd4APK0wZTGtfPXU7w+IBdG5Ez0kE1qzxGQaL4gINJ1zMyleDnbuS8UicjJijvqA"
    "152Sq049ESDz+1rRGc2NVEqh1KaGXmtXvqxXcTB+Ljy5Bw2ke0v8iGngFBPqCTVB3op5KBG3RjbF6RRSzwzuWfL7QErNC8WEy5yD"
    "VARzTA5+xmBc388v9Dm21HGfcC8ODD+gT9sSpssq0ascmvH49MOgjt1yoysLtdCtJW/9FZpoOypaHx0R+mJTLwPXVMrvDaVzWh5a"
    "iEx+idkSGMnX"
)


@functools.cache
def ias_report_signing_ca() -> x509.Certificate:
    """The pinned "Intel SGX Attestation Report Signing CA" certificate."""
    return x509.load_der_x509_certificate(base64.b64decode(_IAS_REPORT_SIGNING_CA_DER_B64))


def common_name(cert: x509.Certificate) -> str:
    """The certificate's subject CN, or its whole subject when it has no CN (for messages)."""
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def fingerprint_sha256(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER encoding, lowercase hex (as the vectors README lists them)."""
    return cert.fingerprint(hashes.SHA256()).hex()
