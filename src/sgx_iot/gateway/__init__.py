"""The untrusted gateway host: state folder, enclave session, signing, attestation, outbox and delivery."""
