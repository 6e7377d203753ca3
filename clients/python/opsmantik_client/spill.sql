-- create_events --
-- AUTOINCREMENT: sequence numbers never go back, even after the table was emptied.
CREATE TABLE IF NOT EXISTS events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    body     BLOB NOT NULL
);

-- create_meta --
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

-- totals --
SELECT count(*), coalesce(sum(length(body)), 0), min(seq) FROM events;

-- insert_event --
INSERT INTO events (event_id, body) VALUES (?, ?);

-- read_from --
SELECT seq, event_id, body FROM events WHERE seq >= ? ORDER BY seq LIMIT ?;

-- delete_event --
DELETE FROM events WHERE seq = ?;

-- get_meta --
SELECT key, value FROM meta;

-- set_meta --
INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- clear_meta --
DELETE FROM meta;
