"""Meters (docs/meters.md): definitions, the JSONPath subset, the exact aggregates the worker
writes in the ledger's transaction, queries and backfill."""
