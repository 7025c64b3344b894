-- Secrets (issue 11): project environment variables, contexts with restrictions, checkout keys,
-- additional SSH keys and checkout tokens. Every secret value is a sealed BLOB (XChaCha20-Poly1305
-- under the server's key, see src/secrets.rs): no column holds one in plaintext. Public keys,
-- fingerprints, names and restrictions are not secret.
CREATE TABLE project_env (
    project_id TEXT NOT NULL REFERENCES projects(id),
    name TEXT NOT NULL,
    value BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (project_id, name)
);

-- A context belongs to an organization, that is a namespace (the one its projects and resource
-- classes use); its name is unique there.
CREATE TABLE contexts (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (namespace, name)
);

CREATE TABLE context_env (
    context_id TEXT NOT NULL REFERENCES contexts(id),
    name TEXT NOT NULL,
    value BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (context_id, name)
);

-- `restriction_type` is `project` (value: a project id; any project restriction limits the
-- context to the projects named) or `expression` (value: an expression over pipeline values;
-- every one must hold).
CREATE TABLE context_restrictions (
    id TEXT PRIMARY KEY,
    context_id TEXT NOT NULL REFERENCES contexts(id),
    restriction_type TEXT NOT NULL,
    restriction_value TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX context_restrictions_context ON context_restrictions (context_id);

-- Checkout (deploy) keys the server generated; `fingerprint` is CircleCI's MD5 form.
CREATE TABLE checkout_keys (
    project_id TEXT NOT NULL REFERENCES projects(id),
    fingerprint TEXT NOT NULL,
    sha256_fingerprint TEXT NOT NULL,
    key_type TEXT NOT NULL,
    public_key TEXT NOT NULL,
    private_key BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (project_id, fingerprint)
);

-- Additional SSH keys (`add_ssh_keys`), uploaded by users.
CREATE TABLE ssh_keys (
    project_id TEXT NOT NULL REFERENCES projects(id),
    fingerprint TEXT NOT NULL,
    md5_fingerprint TEXT NOT NULL,
    hostname TEXT,
    public_key TEXT NOT NULL,
    private_key BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (project_id, fingerprint)
);

-- The repository host's keys, known_hosts lines: learned on the server's first fetch (trust
-- on first use) or set by an admin, and enforced on every fetch and checkout after.
ALTER TABLE projects ADD COLUMN known_hosts TEXT NOT NULL DEFAULT '';
-- A sealed token for `https://` repositories.
ALTER TABLE projects ADD COLUMN checkout_token BLOB;

-- The contexts a workflow job names (JSON list of names), checked when it is queued and read
-- when its tasks fetch their config.
ALTER TABLE jobs ADD COLUMN contexts TEXT NOT NULL DEFAULT '[]';
