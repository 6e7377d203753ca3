"""The ledger worker: ingest topic → ledger + invoice in one transaction → billable topic → ack."""
