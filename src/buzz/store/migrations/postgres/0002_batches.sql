-- Batches created through buzz, and which of their results were billed. A batch's results are
-- fetched from the vendor, as often and in as many pieces as the client likes; each result is
-- billed the first time it passes, and never again.
CREATE TABLE batches (
    id         TEXT PRIMARY KEY,
    provider   TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    project    TEXT NOT NULL,
    user_id    TEXT,
    tags       TEXT NOT NULL,            -- a JSON array
    created    DOUBLE PRECISION NOT NULL -- unix seconds
);
CREATE TABLE batch_results (
    batch_id   TEXT NOT NULL,
    custom_id  TEXT NOT NULL,
    PRIMARY KEY (batch_id, custom_id)
);
