"""The SLA's named queries (sla.sql beside this file)."""

from opsmantik.db.queries import package_queries

Q = package_queries("opsmantik.sla", "sla.sql")
