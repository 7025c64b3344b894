-- The orb registry (issue 12). A version is published once and never changes, except
-- development versions (`dev:LABEL`), which a publish replaces and which expire 90 days after
-- it. `origin` is '' for an orb published here, else the upstream registry it was cached from.
-- The numeric parts of X.Y.Z are kept to pick the highest match of `@X.Y`, `@X`, `@volatile`.
CREATE TABLE orb_versions (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    major INTEGER,
    minor INTEGER,
    patch INTEGER,
    source TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    origin TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (namespace, name, version)
);

-- What an upstream answered for a moving reference (`ns/name@X.Y`, `@X`, `@volatile`): kept a
-- short while, so a config does not ask upstream on every pipeline.
CREATE TABLE orb_lookups (
    reference TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    fetched_at INTEGER NOT NULL
);

-- URL orbs fetched from an allowed prefix, by URL, with their content hash.
CREATE TABLE url_orbs (
    url TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    source TEXT NOT NULL,
    fetched_at INTEGER NOT NULL
);

-- The orbs a pipeline's configuration resolved (JSON list of {reference, version}).
ALTER TABLE pipeline_configs ADD COLUMN orbs TEXT NOT NULL DEFAULT '[]';
