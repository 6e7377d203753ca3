"""Postgres access: the connection pool, named queries and migrations."""
