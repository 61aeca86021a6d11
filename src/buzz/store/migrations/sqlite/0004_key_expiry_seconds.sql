-- A key's expiry as unix seconds, so the request path compares two integers instead of parsing
-- text on every request. An expiry that cannot be read (free text written before it was
-- validated) becomes 0, already past: such a key stays refused, as it was.
ALTER TABLE keys ADD COLUMN expires_unix INTEGER;
UPDATE keys SET expires_unix = coalesce(CAST(strftime('%s', expires_at) AS INTEGER), 0) WHERE expires_at IS NOT NULL;
ALTER TABLE keys DROP COLUMN expires_at;
