-- Caches and workspaces (issue 9), and the retention sweep.
--
-- A cache belongs to a project: `save_cache` of any job of any of its pipelines writes one, and
-- `restore_cache` finds the most recent one whose key starts with a prefix. A key is saved once
-- (the unique index: two concurrent saves, one wins). The bytes live in the blob store under
-- `blob_key` (`caches/<project id>/<cache id>`, ids the server made, never the job's key).
CREATE TABLE caches (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id),
    key TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    blob_key TEXT NOT NULL,
    job_id TEXT NOT NULL REFERENCES jobs(id),
    task_id TEXT NOT NULL REFERENCES tasks(id),
    created_at INTEGER NOT NULL,
    last_used_at INTEGER
);
-- The key lookup, the prefix range (`key >= p AND key < successor(p)`) and the admin listing
-- use this index. There is deliberately no (project_id, created_at) index: given one, SQLite
-- walks a project's caches newest first to find a prefix, every cache of the project for a
-- prefix that matches none; the key range reads only the matching keys.
CREATE UNIQUE INDEX caches_project_key ON caches (project_id, key);
-- The sweep, oldest first (retention counts from creation).
CREATE INDEX caches_created ON caches (created_at);

-- A workspace layer is one `persist_to_workspace` of a job, in the workflow's workspace; `seq`
-- orders one job's layers as it stored them. Bytes under `workspaces/<workflow id>/<layer id>`.
CREATE TABLE workspace_layers (
    id TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL REFERENCES workflows(id),
    job_id TEXT NOT NULL REFERENCES jobs(id),
    task_id TEXT NOT NULL REFERENCES tasks(id),
    seq INTEGER NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    blob_key TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX workspace_layers_workflow ON workspace_layers (workflow_id, created_at);
CREATE INDEX workspace_layers_job ON workspace_layers (job_id, seq);
CREATE INDEX workspace_layers_created ON workspace_layers (created_at);

-- Artifacts expire too (`--artifact-retention`): the sweep finds the oldest first.
CREATE INDEX artifacts_created ON artifacts (created_at);
