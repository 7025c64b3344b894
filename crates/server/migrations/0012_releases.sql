-- Signed releases of the launch-agent and task-agent (issue 15). A release is its manifest's
-- exact text and the ed25519 signature over it (agents verify both; the server only stores
-- them) plus one uploaded file per (platform, name) the manifest lists, in the blob store
-- under releases/VERSION/PLATFORM/NAME. Published releases never change.
CREATE TABLE releases (
    version TEXT PRIMARY KEY,
    manifest TEXT NOT NULL,
    signature BLOB NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE release_files (
    version TEXT NOT NULL REFERENCES releases (version),
    platform TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    uploaded INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (version, platform, name)
);

-- The version agents are to run: scope '' for the whole fleet, or one resource class
-- (NS/NAME, a canary) which wins over the fleet's. `previous` is what a rollback returns to;
-- `rollback` marks a version set by one, which agents may go down to.
CREATE TABLE release_promotions (
    scope TEXT PRIMARY KEY,
    version TEXT NOT NULL REFERENCES releases (version),
    previous TEXT,
    rollback INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL
);
