import pytest
from opsmantik.db.queries import parse_queries


def test_blocks_are_split_by_name_header():
    q = parse_queries("-- preamble\n-- name: a\nSELECT 1\n\n-- name: b_2\nSELECT $1\n  FROM t\n")
    assert q == {"a": "SELECT 1", "b_2": "SELECT $1\n  FROM t"}


def test_duplicate_and_empty_queries_are_refused():
    with pytest.raises(ValueError, match="twice"):
        parse_queries("-- name: a\nSELECT 1\n-- name: a\nSELECT 2\n")
    with pytest.raises(ValueError, match="empty"):
        parse_queries("-- name: a\n\n-- name: b\nSELECT 2\n")
