"""The gateway's named queries (queries.sql beside this file)."""

from opsmantik.db.queries import package_queries

Q = package_queries("opsmantik.gateway", "queries.sql")
