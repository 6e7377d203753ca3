"""The continuous capture audit: every ingest-topic message the worker committed past is in the
ledger or the dead letters (docs/reliability.md, "The capture audit")."""
