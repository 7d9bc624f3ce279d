"""The few DER encoders the Intel SGX certificate extension needs (``cryptography`` has no generic ASN.1 writer)."""

from __future__ import annotations


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element: tag ‖ definite length ‖ content."""
    return bytes([tag]) + _length(len(content)) + content


def sequence(*items: bytes) -> bytes:
    """SEQUENCE of already encoded elements."""
    return tlv(0x30, b"".join(items))


def oid(dotted: str) -> bytes:
    """OBJECT IDENTIFIER from its dotted form."""
    arcs = [int(part) for part in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return tlv(0x06, bytes(body))


def _twos_complement(value: int) -> bytes:
    if value < 0:
        raise ValueError("only non-negative integers are needed here")
    return value.to_bytes(value.bit_length() // 8 + 1, "big")  # one spare bit keeps the sign positive


def integer(value: int) -> bytes:
    """INTEGER (non-negative), minimal encoding (255 → ``02 02 00 ff``, as in Intel's PCK certificates)."""
    return tlv(0x02, _twos_complement(value))


def enumerated(value: int) -> bytes:
    """ENUMERATED (non-negative)."""
    return tlv(0x0A, _twos_complement(value))


def octet_string(data: bytes) -> bytes:
    """OCTET STRING."""
    return tlv(0x04, data)
