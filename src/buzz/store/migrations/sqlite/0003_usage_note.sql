-- Why the meter left part of an answer unread, when it did: `body_over_cap`, `event_over_cap` or
-- `decoded_over_cap`. A fixed string chosen by buzz, never text from the upstream. NULL: the
-- meter read everything it was sent.
ALTER TABLE ledger ADD COLUMN usage_note TEXT;
