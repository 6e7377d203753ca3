"""The outbox relay: ingest_fallback_buffer → Kafka ingest topic, then delete."""
