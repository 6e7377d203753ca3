"""The ledger's storage: month partitions (partitions.py) and the Parquet archive (archive.py)."""
