-- The site lock (services/opsmantik/db/site_locks.py): sites hashed into a bounded set of
-- transaction-scoped advisory locks under one key, taken in ascending order.

-- name: lock_buckets
SELECT pg_advisory_xact_lock(51244, b) FROM unnest($1::int[]) WITH ORDINALITY AS t(b, n) ORDER BY n
