"""Proofs against a real server on loopback: load, soak and shutdown (run by .ci/run)."""
