-- Users, roles and personal API tokens (issue 13). A user has one role: `admin` (runners,
-- contexts, users, releases, every project), `member` (the projects in project_members: read,
-- trigger, cancel, approve, env vars) or `viewer` (read only, every project). Tokens are stored
-- only as SHA-256 hashes, as the admin and runner tokens are.
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    login TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- The bootstrap admin: every token in admin_tokens (BOSUN_ADMIN_TOKEN, DATA_DIR/admin-token)
-- acts as this user. Its id is fixed so that `started_by` of old pipelines keeps naming it.
INSERT INTO users (id, login, name, role, created_at)
VALUES ('a0000000-0000-4000-8000-000000000001', 'admin', 'Administrator', 'admin', 0);

CREATE TABLE user_tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    hash TEXT NOT NULL UNIQUE,
    label TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    last_used_at INTEGER
);
CREATE INDEX user_tokens_user ON user_tokens (user_id, created_at);

CREATE TABLE project_members (
    user_id TEXT NOT NULL REFERENCES users(id),
    project_id TEXT NOT NULL REFERENCES projects(id),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, project_id)
);

-- Who triggered a pipeline and how (CircleCI's `trigger.type`: api, webhook, explicit,
-- scheduled_pipeline). Pipelines from before this migration were triggered through the API by
-- the bootstrap admin, the only user there was.
ALTER TABLE pipelines ADD COLUMN trigger_type TEXT NOT NULL DEFAULT 'api';
ALTER TABLE pipelines ADD COLUMN actor_id TEXT NOT NULL DEFAULT 'a0000000-0000-4000-8000-000000000001';

-- The configuration a pipeline ran (`GET /api/v2/pipeline/{id}/config`): the file as fetched
-- and as compiled; for a setup pipeline, the setup file in setup_* and the continued one in
-- source/compiled once it continues.
CREATE TABLE pipeline_configs (
    pipeline_id TEXT PRIMARY KEY REFERENCES pipelines(id),
    source TEXT NOT NULL,
    compiled TEXT NOT NULL,
    setup_source TEXT,
    setup_compiled TEXT
);

-- Keyset pagination: newest first, by project and across projects.
CREATE INDEX pipelines_project_number ON pipelines (project_id, number);
CREATE INDEX pipelines_created ON pipelines (created_at, id);
