"""The SLA's named queries (sla.sql beside this file)."""

from pathlib import Path

from services.db.queries import load_queries

Q = load_queries(Path(__file__).with_name("sla.sql"))
