"""The gateway enclave: the trusted program (:mod:`.program`), its ECALL protocol (:mod:`.protocol`), its image
definition (:mod:`.image`, ``docs/enclave-image.md``), its loader and host-side client (:mod:`.loader`,
:mod:`.host`) and its signing (:mod:`.signing`).

This file is part of the measured enclave image: it must import nothing.
"""
