-- Artifacts (issue 9): one row per stored file. The bytes live in the blob store under
-- `blob_key`, derived from ids the server made (never from the job's path); `path` is the
-- artifact's path as the job named it, shown by the API.
CREATE TABLE artifacts (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL REFERENCES tasks(id),
    job_id TEXT NOT NULL REFERENCES jobs(id),
    node_index INTEGER NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    blob_key TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX artifacts_job ON artifacts (job_id, path);
