-- Sums that cannot overflow. One event carries at most 10^12 units, so a bigint invoice
-- (max 9.2 * 10^18) overflowed after about 9.2 million maximal events in a month: every
-- batch of that site's partition then failed. Quantities summed over events are numeric;
-- a single event's quantity stays bigint (its CHECK bounds it).
ALTER TABLE site_usage_monthly
    ALTER COLUMN quantity TYPE numeric,
    ALTER COLUMN overlimit_quantity TYPE numeric;
ALTER TABLE reconcile_results
    ALTER COLUMN ledger_quantity TYPE numeric,
    ALTER COLUMN invoice_quantity TYPE numeric,
    ALTER COLUMN drift_quantity TYPE numeric,
    ALTER COLUMN drift_overlimit_quantity TYPE numeric;
