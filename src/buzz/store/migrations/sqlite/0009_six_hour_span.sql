-- A fourth span, six hours (21600 s, from 00:00, 06:00, 12:00 and 18:00 UTC), for days that do
-- not start at UTC midnight. A local day in Paris or Kolkata holds no whole UTC day, so it was read
-- as 23 or 24 hour rows (and quarter hours at a half-hour edge); with six-hour rows it is three of
-- those and the hours at its two edges, about half as many rows to read.
--
-- Rows already folded are summed from their hour rows, which the rollups keep whatever the
-- ledger's retention removed.

INSERT INTO rollup (project, span, bucket, key_id, provider, model, surface, status_class, requests, errors, input_tokens, output_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens, cost_nanos, list_cost_nanos, unpriced, estimated)
SELECT project, 21600, bucket / 21600 * 21600, key_id, provider, model, surface, status_class, sum(requests), sum(errors), sum(input_tokens), sum(output_tokens), sum(cache_write_5m_tokens), sum(cache_write_1h_tokens), sum(cache_read_tokens), sum(cost_nanos), sum(list_cost_nanos), sum(unpriced), sum(estimated)
FROM rollup WHERE span = 3600 GROUP BY project, bucket / 21600 * 21600, key_id, provider, model, surface, status_class;

INSERT INTO rollup_user (project, span, bucket, user_id, requests, errors, input_tokens, output_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens, cost_nanos, list_cost_nanos, unpriced, estimated)
SELECT project, 21600, bucket / 21600 * 21600, user_id, sum(requests), sum(errors), sum(input_tokens), sum(output_tokens), sum(cache_write_5m_tokens), sum(cache_write_1h_tokens), sum(cache_read_tokens), sum(cost_nanos), sum(list_cost_nanos), sum(unpriced), sum(estimated)
FROM rollup_user WHERE span = 3600 GROUP BY project, bucket / 21600 * 21600, user_id;

INSERT INTO rollup_tag (project, span, bucket, tag_key, tag_value, requests, errors, input_tokens, output_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens, cost_nanos, list_cost_nanos, unpriced, estimated)
SELECT project, 21600, bucket / 21600 * 21600, tag_key, tag_value, sum(requests), sum(errors), sum(input_tokens), sum(output_tokens), sum(cache_write_5m_tokens), sum(cache_write_1h_tokens), sum(cache_read_tokens), sum(cost_nanos), sum(list_cost_nanos), sum(unpriced), sum(estimated)
FROM rollup_tag WHERE span = 3600 GROUP BY project, bucket / 21600 * 21600, tag_key, tag_value;

INSERT INTO rollup_tag_key (project, span, bucket, tag_key, requests, errors, input_tokens, output_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens, cost_nanos, list_cost_nanos, unpriced, estimated)
SELECT project, 21600, bucket / 21600 * 21600, tag_key, sum(requests), sum(errors), sum(input_tokens), sum(output_tokens), sum(cache_write_5m_tokens), sum(cache_write_1h_tokens), sum(cache_read_tokens), sum(cost_nanos), sum(list_cost_nanos), sum(unpriced), sum(estimated)
FROM rollup_tag_key WHERE span = 3600 GROUP BY project, bucket / 21600 * 21600, tag_key;
