"""Recovery when the database is lost (docs/reliability.md "When the database is lost"): rewind
the consumer groups so the worker rebuilds the ledger from the topic (rewind.py), base backups
and point-in-time restore of the stack's Postgres (backup.py)."""
