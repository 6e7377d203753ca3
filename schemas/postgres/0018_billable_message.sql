-- The billable topic's message of a ledger row (schemas/billable.v1.json), formatted by Postgres
-- for the worker (services/opsmantik/worker/ledger.sql insert_ledger and ledgered_copies, issue 28):
-- byte for byte what worker/billable.py to_billable makes of the row: compact JSON in its key
-- order, times as Python's isoformat in UTC with microseconds, dates as ISO, properties as jsonb's
-- own text (tests/integration/test_worker_billable_sql.py). SQL functions of one SELECT: the
-- planner inlines them into the statements that call them.
CREATE FUNCTION billable_time(t timestamptz) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')
$$;

CREATE FUNCTION billable_value(i ingest_idempotency) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT '{"v":1,"site_id":"' || i.site_id::text
           || '","event_id":' || to_json(i.event_id)::text
           || ',"type":' || to_json(i.event_type)::text
           || ',"occurred_at":"' || billable_time(i.occurred_at)
           || '","usage_month":"' || to_char(i.usage_month::timestamp, 'YYYY-MM-DD')
           || '","billing_month":"' || to_char(i.billing_month::timestamp, 'YYYY-MM-DD')
           || '","quantity":' || i.quantity::text
           || ',"billing_class":' || to_json(i.billing_class)::text
           || ',"path":' || to_json(i.path)::text
           || ',"received_at":"' || billable_time(i.received_at)
           || '","ledgered_at":"' || billable_time(i.ledgered_at)
           || '","kafka_partition":' || coalesce(i.kafka_partition::text, 'null')
           || ',"kafka_offset":' || coalesce(i.kafka_offset::text, 'null')
           || ',"properties":' || coalesce(i.properties::text, 'null')
           || '}'
$$;
