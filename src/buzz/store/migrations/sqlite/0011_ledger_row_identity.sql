-- A row's identity is its time and id: a batch written again (a retry whose first commit did
-- land) inserts nothing twice, as the writer inserts with OR IGNORE. The unique index takes the
-- place of the index on time alone, which it serves as well, and it also serves the export's
-- (ts, id) order.
CREATE UNIQUE INDEX IF NOT EXISTS ledger_ts_id ON ledger (ts, id);
DROP INDEX IF EXISTS ledger_ts;
