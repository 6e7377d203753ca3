"""Month close, statements, voids, the verifiable dispute export (docs/billing.md)."""
