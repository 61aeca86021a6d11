-- The files that hold a batch's results, where the vendor serves them as files of their own
-- (OpenAI's output_file_id): fetching one is fetching that batch's results.
CREATE TABLE batch_files (
    file_id    TEXT PRIMARY KEY,
    batch_id   TEXT NOT NULL
);
