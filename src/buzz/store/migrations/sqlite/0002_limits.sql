-- Projects and their limits. A NULL limit is no limit. Money is integer nano-dollars.
CREATE TABLE projects (
    name          TEXT PRIMARY KEY,
    rpm           INTEGER,
    itpm          INTEGER,
    otpm          INTEGER,
    concurrency   INTEGER,
    daily_nanos   INTEGER,
    monthly_nanos INTEGER,
    prepaid       INTEGER NOT NULL DEFAULT 0,  -- 1: every request draws down balance_nanos
    balance_nanos INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL
);
INSERT INTO projects (name, created_at) SELECT DISTINCT project, min(created_at) FROM keys GROUP BY project;

ALTER TABLE keys ADD COLUMN rpm INTEGER;
ALTER TABLE keys ADD COLUMN itpm INTEGER;
ALTER TABLE keys ADD COLUMN otpm INTEGER;
ALTER TABLE keys ADD COLUMN concurrency INTEGER;
ALTER TABLE keys ADD COLUMN daily_nanos INTEGER;
ALTER TABLE keys ADD COLUMN monthly_nanos INTEGER;
ALTER TABLE keys ADD COLUMN expires_at TEXT;
ALTER TABLE keys ADD COLUMN allowed_models TEXT;  -- JSON array of ids or glob patterns; NULL = all

-- Limit changes take effect on the next request, like revocations: bump the same counter.
CREATE TRIGGER projects_insert AFTER INSERT ON projects
BEGIN UPDATE counters SET value = value + 1 WHERE name = 'keys_version'; END;
CREATE TRIGGER projects_update AFTER UPDATE OF rpm, itpm, otpm, concurrency, daily_nanos, monthly_nanos, prepaid ON projects
BEGIN UPDATE counters SET value = value + 1 WHERE name = 'keys_version'; END;
