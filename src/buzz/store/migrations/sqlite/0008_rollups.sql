-- Rollups: the ledger's sums per quarter hour, kept by the ledger writer in the same transaction
-- as the rows, so reports never scan raw rows and never disagree with them. A quarter hour is
-- fine enough to regroup into any time zone's hours and days.
--
-- Three tables, each keyed by project first (a member's report reads its project's rows only),
-- then bucket (unix seconds at the quarter hour's start, UTC):
--   rollup       by key, provider, model, surface and status class;
--   rollup_user  the same, and by user, for rows with a user (the rest are `rollup` less these):
--                kept apart so many users do not swell the first;
--   rollup_tag   the same, and by tag (one row per tag of a request);
--   rollup_tag_key  the same, and by tag key, each request once per key it carries: what a
--                split by a key's values needs to say how much carries none of them.
-- Absent values are '' (no key on a refused request, no user, no model), never NULL, so that
-- the primary key can hold them.
CREATE TABLE rollup (
    project               TEXT NOT NULL,
    bucket                INTEGER NOT NULL,
    key_id                TEXT NOT NULL,
    provider              TEXT NOT NULL,
    model                 TEXT NOT NULL,
    surface               TEXT NOT NULL,
    status_class          INTEGER NOT NULL,
    requests              INTEGER NOT NULL,
    errors                INTEGER NOT NULL,
    input_tokens          INTEGER NOT NULL,
    output_tokens         INTEGER NOT NULL,
    cache_write_5m_tokens INTEGER NOT NULL,
    cache_write_1h_tokens INTEGER NOT NULL,
    cache_read_tokens     INTEGER NOT NULL,
    cost_nanos            INTEGER NOT NULL,
    list_cost_nanos       INTEGER NOT NULL,
    unpriced              INTEGER NOT NULL,
    estimated             INTEGER NOT NULL,
    PRIMARY KEY (project, bucket, key_id, provider, model, surface, status_class)
) WITHOUT ROWID;

CREATE TABLE rollup_user (
    project               TEXT NOT NULL,
    bucket                INTEGER NOT NULL,
    user_id               TEXT NOT NULL,
    key_id                TEXT NOT NULL,
    provider              TEXT NOT NULL,
    model                 TEXT NOT NULL,
    surface               TEXT NOT NULL,
    status_class          INTEGER NOT NULL,
    requests              INTEGER NOT NULL,
    errors                INTEGER NOT NULL,
    input_tokens          INTEGER NOT NULL,
    output_tokens         INTEGER NOT NULL,
    cache_write_5m_tokens INTEGER NOT NULL,
    cache_write_1h_tokens INTEGER NOT NULL,
    cache_read_tokens     INTEGER NOT NULL,
    cost_nanos            INTEGER NOT NULL,
    list_cost_nanos       INTEGER NOT NULL,
    unpriced              INTEGER NOT NULL,
    estimated             INTEGER NOT NULL,
    PRIMARY KEY (project, bucket, user_id, key_id, provider, model, surface, status_class)
) WITHOUT ROWID;

CREATE TABLE rollup_tag (
    project               TEXT NOT NULL,
    bucket                INTEGER NOT NULL,
    tag_key               TEXT NOT NULL,  -- "feature" of "feature=search"; '' for a tag without "="
    tag_value             TEXT NOT NULL,
    key_id                TEXT NOT NULL,
    provider              TEXT NOT NULL,
    model                 TEXT NOT NULL,
    surface               TEXT NOT NULL,
    status_class          INTEGER NOT NULL,
    requests              INTEGER NOT NULL,
    errors                INTEGER NOT NULL,
    input_tokens          INTEGER NOT NULL,
    output_tokens         INTEGER NOT NULL,
    cache_write_5m_tokens INTEGER NOT NULL,
    cache_write_1h_tokens INTEGER NOT NULL,
    cache_read_tokens     INTEGER NOT NULL,
    cost_nanos            INTEGER NOT NULL,
    list_cost_nanos       INTEGER NOT NULL,
    unpriced              INTEGER NOT NULL,
    estimated             INTEGER NOT NULL,
    PRIMARY KEY (project, bucket, tag_key, tag_value, key_id, provider, model, surface, status_class)
) WITHOUT ROWID;

CREATE TABLE rollup_tag_key (
    project               TEXT NOT NULL,
    bucket                INTEGER NOT NULL,
    tag_key               TEXT NOT NULL,
    key_id                TEXT NOT NULL,
    provider              TEXT NOT NULL,
    model                 TEXT NOT NULL,
    surface               TEXT NOT NULL,
    status_class          INTEGER NOT NULL,
    requests              INTEGER NOT NULL,
    errors                INTEGER NOT NULL,
    input_tokens          INTEGER NOT NULL,
    output_tokens         INTEGER NOT NULL,
    cache_write_5m_tokens INTEGER NOT NULL,
    cache_write_1h_tokens INTEGER NOT NULL,
    cache_read_tokens     INTEGER NOT NULL,
    cost_nanos            INTEGER NOT NULL,
    list_cost_nanos       INTEGER NOT NULL,
    unpriced              INTEGER NOT NULL,
    estimated             INTEGER NOT NULL,
    PRIMARY KEY (project, bucket, tag_key, key_id, provider, model, surface, status_class)
) WITHOUT ROWID;

-- The ledger's highest rowid already in the rollups. The writer adds the rows above it, in the
-- transaction that inserts them; on an existing ledger the first start adds every row.
CREATE TABLE rollup_state (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    last_rowid INTEGER NOT NULL
);
INSERT INTO rollup_state (id, last_rowid) VALUES (1, 0);

-- Each key's latest request, for the console's key list. Apart from `keys`, whose every change
-- tells running gateways to reread their keys.
CREATE TABLE key_last_used (
    key_id  TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    ts      TEXT NOT NULL
);

-- A member's export reads its project's rows in time order.
CREATE INDEX ledger_project_ts ON ledger (project, ts);
