"""The HTTP ingest gateway: POST /api/sync answers 200 only once every event is stored."""
