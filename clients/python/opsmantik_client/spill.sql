-- name: create_events
-- seq is assigned by the one process holding the spill's lock (Spill.append), ascending.
CREATE TABLE IF NOT EXISTS events (
    seq      INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    body     BLOB NOT NULL
);

-- name: create_meta
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

-- name: totals
SELECT count(*), coalesce(sum(length(body)), 0), min(seq), coalesce(max(seq), 0) FROM events;

-- name: insert_event
INSERT INTO events (seq, event_id, body) VALUES (?, ?, ?);

-- name: read_from
SELECT seq, event_id, body FROM events WHERE seq >= ? ORDER BY seq LIMIT ?;

-- name: delete_event
DELETE FROM events WHERE seq = ?;

-- name: delete_range
-- A batch's events usually have consecutive numbers: one statement instead of one per event.
DELETE FROM events WHERE seq BETWEEN ? AND ?;

-- name: get_meta
SELECT key, value FROM meta;

-- name: set_meta
INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- name: clear_meta
DELETE FROM meta;
