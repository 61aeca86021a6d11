-- Rollups: the ledger's sums per bucket of time, kept by the ledger writer in the same
-- transaction as the rows, so reports never scan raw rows and never disagree with them.
--
-- Each row sum is kept at three spans: a quarter hour, an hour and a UTC day (`span` = 900,
-- 3600, 86400; `bucket` = unix seconds at the bucket's start). A quarter hour is fine enough to
-- regroup into any time zone's hours and days (every UTC offset in use is a whole number of
-- quarter hours); a report reads the coarsest span whose edges fall on its own, so a month in
-- UTC reads thirty days, not 2,880 quarter hours.
--
-- Four tables, each keyed by project first (a member's report reads its project's rows only):
--   rollup          by key, provider, model, surface and status class;
--   rollup_user     by user, for rows with a user (the rest are `rollup` less these);
--   rollup_tag      by tag key and value, one row per tag of a request;
--   rollup_tag_key  by tag key, each request once per key it carries: what a split by a key's
--                   values needs to say how much carries none of them.
-- The user and tag tables hold no other dimension: many users times keys and models would make
-- them as big as the ledger. A user or tag report with another filter reads raw rows.
-- Absent values are '' (no key, no model), never NULL, so that the primary key can hold them.
CREATE TABLE rollup (
    project               TEXT NOT NULL,
    span                  INTEGER NOT NULL,
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
    PRIMARY KEY (project, span, bucket, key_id, provider, model, surface, status_class)
) WITHOUT ROWID;

CREATE TABLE rollup_user (
    project               TEXT NOT NULL,
    span                  INTEGER NOT NULL,
    bucket                INTEGER NOT NULL,
    user_id               TEXT NOT NULL,
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
    PRIMARY KEY (project, span, bucket, user_id)
) WITHOUT ROWID;

CREATE TABLE rollup_tag (
    project               TEXT NOT NULL,
    span                  INTEGER NOT NULL,
    bucket                INTEGER NOT NULL,
    tag_key               TEXT NOT NULL,  -- "feature" of "feature=search"; '' for a tag without "="
    tag_value             TEXT NOT NULL,
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
    PRIMARY KEY (project, span, bucket, tag_key, tag_value)
) WITHOUT ROWID;

CREATE TABLE rollup_tag_key (
    project               TEXT NOT NULL,
    span                  INTEGER NOT NULL,
    bucket                INTEGER NOT NULL,
    tag_key               TEXT NOT NULL,
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
    PRIMARY KEY (project, span, bucket, tag_key)
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

-- A member's export, and reports the rollups do not hold, read a project's rows in time order.
CREATE INDEX ledger_project_ts ON ledger (project, ts);
