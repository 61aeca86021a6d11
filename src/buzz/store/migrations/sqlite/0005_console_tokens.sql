-- Console tokens: how a project's members sign in to the console and read its export. Like keys,
-- only a hash of the secret is kept, and a token is shown once, at creation. A token is not an
-- API key and an API key is not a token: a leaked key cannot open the console.
CREATE TABLE console_tokens (
    id          TEXT PRIMARY KEY,
    project     TEXT NOT NULL,
    name        TEXT,
    secret_hash BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
CREATE INDEX console_tokens_project ON console_tokens (project);
