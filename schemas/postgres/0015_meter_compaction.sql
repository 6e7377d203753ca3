-- Meter compaction (docs/meters.md "Storage bound"): minute buckets older than the acceptance
-- window are merged into 15-minute buckets (services/opsmantik/meters/compact.py). One row: every
-- bucket before `compacted_before` may be a 15-minute bucket (stored at its quarter's start), so
-- the query refuses windows with a boundary there that is not a UTC quarter hour (MINUTE windows).
CREATE TABLE meter_compaction (
    one               boolean PRIMARY KEY DEFAULT true CHECK (one),
    compacted_before  timestamptz NOT NULL
);
