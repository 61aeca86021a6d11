-- The name of the upstream credential a request went out with (`[[providers.<vendor>.credentials]]`,
-- or `default` for a vendor's single key). Never the key itself. NULL: nothing went upstream.
ALTER TABLE ledger ADD COLUMN credential TEXT;
