-- Keys: only a hash of the secret is kept; the secret is shown once, at creation.
CREATE TABLE keys (
    id          TEXT PRIMARY KEY,
    project     TEXT NOT NULL,
    name        TEXT,
    secret_hash BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
CREATE INDEX keys_project ON keys (project);

-- A counter every change to `keys` bumps, so a running gateway can tell in one cheap read
-- that its key cache is stale (a revocation from the CLI takes effect on the next request).
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO counters (name, value) VALUES ('keys_version', 0);
CREATE TRIGGER keys_insert AFTER INSERT ON keys
BEGIN UPDATE counters SET value = value + 1 WHERE name = 'keys_version'; END;
CREATE TRIGGER keys_update AFTER UPDATE ON keys
BEGIN UPDATE counters SET value = value + 1 WHERE name = 'keys_version'; END;
CREATE TRIGGER keys_delete AFTER DELETE ON keys
BEGIN UPDATE counters SET value = value + 1 WHERE name = 'keys_version'; END;

-- The ledger: billing metadata and nothing else. No column may ever hold a body, a prompt,
-- a completion, an error message or an excerpt of any of them.
-- Rows are only ever appended, in time order, so the table is kept in rowid order with one index
-- on time: a primary-key index on `id` (unique by construction) doubled the cost of each insert.
CREATE TABLE ledger (
    id                    TEXT NOT NULL,
    ts                    TEXT NOT NULL,
    key_id                TEXT,
    project               TEXT,
    user_id               TEXT,
    tags                  TEXT NOT NULL DEFAULT '[]',
    surface               TEXT NOT NULL,
    provider              TEXT,
    model                 TEXT,
    status                INTEGER NOT NULL,
    error_type            TEXT,
    input_tokens          INTEGER NOT NULL DEFAULT 0,
    output_tokens         INTEGER NOT NULL DEFAULT 0,
    cache_write_5m_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_1h_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens     INTEGER NOT NULL DEFAULT 0,
    cost_nanos            INTEGER,
    list_cost_nanos       INTEGER,
    price_version         TEXT,
    usage_source          TEXT NOT NULL,
    latency_ms            REAL NOT NULL,
    ttfb_ms               REAL,
    upstream_request_id   TEXT
);
CREATE INDEX ledger_ts ON ledger (ts);
