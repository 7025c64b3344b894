-- bosun-server schema, version 1. Times are unix milliseconds.
CREATE TABLE admin_tokens (
    hash TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL
);

CREATE TABLE resource_classes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    namespace TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE runner_tokens (
    id TEXT PRIMARY KEY,
    resource_class_id TEXT NOT NULL REFERENCES resource_classes(id),
    nickname TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE runners (
    resource_class TEXT NOT NULL,
    name TEXT NOT NULL,
    hostname TEXT NOT NULL,
    ip TEXT NOT NULL,
    version TEXT NOT NULL,
    first_connected INTEGER NOT NULL,
    last_connected INTEGER NOT NULL,
    last_used INTEGER,
    PRIMARY KEY (resource_class, name)
);

CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    git_url TEXT NOT NULL,
    next_pipeline_number INTEGER NOT NULL DEFAULT 1,
    next_job_number INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL
);

CREATE TABLE pipelines (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id),
    number INTEGER NOT NULL,
    branch TEXT,
    tag TEXT,
    revision TEXT NOT NULL,
    state TEXT NOT NULL,
    status TEXT NOT NULL,
    errors TEXT NOT NULL DEFAULT '[]',
    created_at INTEGER NOT NULL
);

CREATE TABLE workflows (
    id TEXT PRIMARY KEY,
    pipeline_id TEXT NOT NULL REFERENCES pipelines(id),
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    stopped_at INTEGER
);

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL REFERENCES workflows(id),
    pipeline_id TEXT NOT NULL REFERENCES pipelines(id),
    name TEXT NOT NULL,
    number INTEGER NOT NULL,
    position INTEGER NOT NULL,
    status TEXT NOT NULL,
    resource_class TEXT NOT NULL,
    requires TEXT NOT NULL,
    spec TEXT NOT NULL,
    message TEXT,
    started_at INTEGER,
    stopped_at INTEGER
);
CREATE INDEX jobs_workflow ON jobs (workflow_id, position);

CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs(id),
    resource_class TEXT NOT NULL,
    status TEXT NOT NULL,
    token_hash TEXT UNIQUE,
    runner_name TEXT,
    lease_expires INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    claimed_at INTEGER,
    finished_at INTEGER
);
CREATE INDEX tasks_queue ON tasks (status, resource_class, created_at);
CREATE INDEX tasks_job ON tasks (job_id);

CREATE TABLE steps (
    task_id TEXT NOT NULL REFERENCES tasks(id),
    idx INTEGER NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    exit_code INTEGER,
    duration_ms INTEGER,
    PRIMARY KEY (task_id, idx)
);
