-- Each project's sums per bucket, with no other dimension: what a report's whole total, the
-- series of everything past its first groups, a split by project and the size of a raw read ask
-- for. Read from `rollup`, a day across every project in Kolkata was every key, model and status
-- of each hour of it; here it is one row per project and bucket.
--
-- Summed from `rollup`, which holds every row ever folded whatever retention removed.

CREATE TABLE rollup_project (
    project               TEXT NOT NULL,
    span                  INTEGER NOT NULL,
    bucket                INTEGER NOT NULL,
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
    PRIMARY KEY (project, span, bucket)
) WITHOUT ROWID;

INSERT INTO rollup_project (project, span, bucket, requests, errors, input_tokens, output_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens, cost_nanos, list_cost_nanos, unpriced, estimated)
SELECT project, span, bucket, sum(requests), sum(errors), sum(input_tokens), sum(output_tokens), sum(cache_write_5m_tokens), sum(cache_write_1h_tokens), sum(cache_read_tokens), sum(cost_nanos), sum(list_cost_nanos), sum(unpriced), sum(estimated)
FROM rollup GROUP BY project, span, bucket;
