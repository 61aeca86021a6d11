-- The whole schema at once: a PostgreSQL database starts at this version, with no SQLite
-- history to replay. Types follow the SQLite store's; times the request path never compares
-- (created_at, revoked_at) stay RFC 3339 text, so both stores hand back the same records.

-- Keys: only a hash of the secret is kept; the secret is shown once, at creation.
CREATE TABLE keys (
    id             TEXT PRIMARY KEY,
    project        TEXT NOT NULL,
    name           TEXT,
    secret_hash    BYTEA NOT NULL,
    created_at     TEXT NOT NULL,
    revoked_at     TEXT,
    rpm            BIGINT,
    itpm           BIGINT,
    otpm           BIGINT,
    concurrency    BIGINT,
    daily_nanos    BIGINT,
    monthly_nanos  BIGINT,
    expires_unix   BIGINT,
    allowed_models TEXT  -- JSON array of ids or glob patterns; NULL = all
);
CREATE INDEX keys_project ON keys (project);

-- Projects and their limits. A NULL limit is no limit. Money is integer nano-dollars.
CREATE TABLE projects (
    name          TEXT PRIMARY KEY,
    rpm           BIGINT,
    itpm          BIGINT,
    otpm          BIGINT,
    concurrency   BIGINT,
    daily_nanos   BIGINT,
    monthly_nanos BIGINT,
    prepaid       INTEGER NOT NULL DEFAULT 0,  -- 1: every request draws down balance_nanos
    balance_nanos BIGINT NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL
);

CREATE TABLE console_tokens (
    id          TEXT PRIMARY KEY,
    project     TEXT NOT NULL,
    name        TEXT,
    secret_hash BYTEA NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
CREATE INDEX console_tokens_project ON console_tokens (project);

-- The key that signs console sessions: one row, made on first use, shared by every process.
CREATE TABLE console_secret (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    secret     BYTEA NOT NULL,
    created_at TEXT NOT NULL
);

-- Every change a running gateway must see at once (a key created, changed or revoked, a
-- project's limits or prepaid flag changed) is announced on the channel `buzz`, with the schema
-- as payload so that several buzz databases in one PostgreSQL never flush each other's caches.
-- A balance moved by the ledger writer is not announced: it moves on every batch, and the
-- limiters keep their own balances. An operator's top-up is announced by the store itself.
CREATE FUNCTION buzz_announce() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('buzz', TG_TABLE_SCHEMA);
    RETURN NULL;
END $$;
CREATE TRIGGER keys_changed AFTER INSERT OR UPDATE OR DELETE ON keys
    FOR EACH STATEMENT EXECUTE FUNCTION buzz_announce();
CREATE TRIGGER projects_added AFTER INSERT OR DELETE ON projects
    FOR EACH STATEMENT EXECUTE FUNCTION buzz_announce();
CREATE TRIGGER projects_changed AFTER UPDATE OF rpm, itpm, otpm, concurrency, daily_nanos, monthly_nanos, prepaid
    ON projects FOR EACH STATEMENT EXECUTE FUNCTION buzz_announce();
CREATE TRIGGER console_tokens_changed AFTER UPDATE OR DELETE ON console_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION buzz_announce();

-- The ledger: billing metadata and nothing else. No column may ever hold a body, a prompt, a
-- completion, an error message or an excerpt of any of them.
-- Partitioned by month (ledger_YYYYMM, made by the writer as rows need them), so retention
-- drops whole months. The primary key (ts, id) makes a replayed batch insert nothing twice: a
-- row's id and time never change, and the writer inserts with ON CONFLICT DO NOTHING. It also
-- serves ranges of time and the export's (ts, id) order.
CREATE TABLE ledger (
    id                    TEXT NOT NULL,
    ts                    TIMESTAMPTZ NOT NULL,  -- to the millisecond
    key_id                TEXT,
    project               TEXT,
    user_id               TEXT,
    tags                  TEXT[] NOT NULL DEFAULT '{}',
    surface               TEXT NOT NULL,
    provider              TEXT,
    model                 TEXT,
    status                INTEGER NOT NULL,
    error_type            TEXT,
    input_tokens          BIGINT NOT NULL DEFAULT 0,
    output_tokens         BIGINT NOT NULL DEFAULT 0,
    cache_write_5m_tokens BIGINT NOT NULL DEFAULT 0,
    cache_write_1h_tokens BIGINT NOT NULL DEFAULT 0,
    cache_read_tokens     BIGINT NOT NULL DEFAULT 0,
    cost_nanos            BIGINT,
    list_cost_nanos       BIGINT,
    price_version         TEXT,
    usage_source          TEXT NOT NULL,
    latency_ms            DOUBLE PRECISION NOT NULL,
    ttfb_ms               DOUBLE PRECISION,
    upstream_request_id   TEXT,
    usage_note            TEXT,
    PRIMARY KEY (ts, id)
) PARTITION BY RANGE (ts);
-- A member's export, and reports the rollups do not hold, read a project's rows in time order.
CREATE INDEX ledger_project_ts ON ledger (project, ts);

-- Rollups: the ledger's sums per bucket of time (`span` 86400, 21600, 3600 or 900 seconds;
-- `bucket` the unix second it starts), added by the writer in the transaction that inserts the
-- rows, so reports never scan raw rows and never disagree with them. The tables and their roles
-- are the SQLite store's (see docs/architecture.md). Absent values are '' (no key, no model).
CREATE TABLE rollup (
    project               TEXT NOT NULL,
    span                  INTEGER NOT NULL,
    bucket                BIGINT NOT NULL,
    key_id                TEXT NOT NULL,
    provider              TEXT NOT NULL,
    model                 TEXT NOT NULL,
    surface               TEXT NOT NULL,
    status_class          INTEGER NOT NULL,
    requests              BIGINT NOT NULL,
    errors                BIGINT NOT NULL,
    input_tokens          BIGINT NOT NULL,
    output_tokens         BIGINT NOT NULL,
    cache_write_5m_tokens BIGINT NOT NULL,
    cache_write_1h_tokens BIGINT NOT NULL,
    cache_read_tokens     BIGINT NOT NULL,
    cost_nanos            BIGINT NOT NULL,
    list_cost_nanos       BIGINT NOT NULL,
    unpriced              BIGINT NOT NULL,
    estimated             BIGINT NOT NULL,
    PRIMARY KEY (project, span, bucket, key_id, provider, model, surface, status_class)
);
CREATE TABLE rollup_project (
    project               TEXT NOT NULL,
    span                  INTEGER NOT NULL,
    bucket                BIGINT NOT NULL,
    requests              BIGINT NOT NULL,
    errors                BIGINT NOT NULL,
    input_tokens          BIGINT NOT NULL,
    output_tokens         BIGINT NOT NULL,
    cache_write_5m_tokens BIGINT NOT NULL,
    cache_write_1h_tokens BIGINT NOT NULL,
    cache_read_tokens     BIGINT NOT NULL,
    cost_nanos            BIGINT NOT NULL,
    list_cost_nanos       BIGINT NOT NULL,
    unpriced              BIGINT NOT NULL,
    estimated             BIGINT NOT NULL,
    PRIMARY KEY (project, span, bucket)
);
CREATE TABLE rollup_user (
    project               TEXT NOT NULL,
    span                  INTEGER NOT NULL,
    bucket                BIGINT NOT NULL,
    user_id               TEXT NOT NULL,
    requests              BIGINT NOT NULL,
    errors                BIGINT NOT NULL,
    input_tokens          BIGINT NOT NULL,
    output_tokens         BIGINT NOT NULL,
    cache_write_5m_tokens BIGINT NOT NULL,
    cache_write_1h_tokens BIGINT NOT NULL,
    cache_read_tokens     BIGINT NOT NULL,
    cost_nanos            BIGINT NOT NULL,
    list_cost_nanos       BIGINT NOT NULL,
    unpriced              BIGINT NOT NULL,
    estimated             BIGINT NOT NULL,
    PRIMARY KEY (project, span, bucket, user_id)
);
CREATE INDEX rollup_user_by_user ON rollup_user (project, user_id, span, bucket);
CREATE TABLE rollup_tag (
    project               TEXT NOT NULL,
    span                  INTEGER NOT NULL,
    bucket                BIGINT NOT NULL,
    tag_key               TEXT NOT NULL,
    tag_value             TEXT NOT NULL,
    requests              BIGINT NOT NULL,
    errors                BIGINT NOT NULL,
    input_tokens          BIGINT NOT NULL,
    output_tokens         BIGINT NOT NULL,
    cache_write_5m_tokens BIGINT NOT NULL,
    cache_write_1h_tokens BIGINT NOT NULL,
    cache_read_tokens     BIGINT NOT NULL,
    cost_nanos            BIGINT NOT NULL,
    list_cost_nanos       BIGINT NOT NULL,
    unpriced              BIGINT NOT NULL,
    estimated             BIGINT NOT NULL,
    PRIMARY KEY (project, span, bucket, tag_key, tag_value)
);
CREATE TABLE rollup_tag_key (
    project               TEXT NOT NULL,
    span                  INTEGER NOT NULL,
    bucket                BIGINT NOT NULL,
    tag_key               TEXT NOT NULL,
    requests              BIGINT NOT NULL,
    errors                BIGINT NOT NULL,
    input_tokens          BIGINT NOT NULL,
    output_tokens         BIGINT NOT NULL,
    cache_write_5m_tokens BIGINT NOT NULL,
    cache_write_1h_tokens BIGINT NOT NULL,
    cache_read_tokens     BIGINT NOT NULL,
    cost_nanos            BIGINT NOT NULL,
    list_cost_nanos       BIGINT NOT NULL,
    unpriced              BIGINT NOT NULL,
    estimated             BIGINT NOT NULL,
    PRIMARY KEY (project, span, bucket, tag_key)
);

-- Each key's latest request, for the console's key list.
CREATE TABLE key_last_used (
    key_id  TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    ts      TIMESTAMPTZ NOT NULL
);
