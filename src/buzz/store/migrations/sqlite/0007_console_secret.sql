-- The key that signs console sessions (HMAC-SHA256). One row, made on first use and shared by
-- every buzz process on this database, so a session signed by one is good at all of them.
-- Deleting the row signs everybody out once every process has restarted.
CREATE TABLE console_secret (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    secret     BLOB NOT NULL,
    created_at TEXT NOT NULL
);
