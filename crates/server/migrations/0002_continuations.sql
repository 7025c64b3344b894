-- Dynamic configuration: one continuation key per pipeline of a `setup: true` config. The key
-- itself is given to the setup workflow's jobs as CIRCLE_CONTINUATION_KEY; only its SHA-256 is
-- stored. `used_at` is set by the one successful `POST /api/v2/pipeline/continue`.
CREATE TABLE continuations (
    key_hash TEXT PRIMARY KEY,
    pipeline_id TEXT NOT NULL REFERENCES pipelines(id),
    created_at INTEGER NOT NULL,
    used_at INTEGER
);
CREATE INDEX continuations_pipeline ON continuations (pipeline_id);
