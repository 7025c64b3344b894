-- Security hardening (issue 8).
--
-- A project belongs to an organization that owns one namespace; its pipelines use only that
-- namespace's resource classes. Existing projects get their slug's organization, lower-cased
-- (`gh/Acme/widgets` -> `acme`), the default for new projects too.
ALTER TABLE projects ADD COLUMN namespace TEXT NOT NULL DEFAULT '';
UPDATE projects SET namespace = lower(substr(
    substr(slug, instr(slug, '/') + 1),
    1,
    instr(substr(slug, instr(slug, '/') + 1), '/') - 1
));

-- Continuation keys are no longer stored anywhere, not even in a job's spec: a job of a setup
-- workflow is marked `continuation`, and each of its tasks gets a fresh key when it fetches its
-- config; `continuations` keeps the key's SHA-256 and the task it was given to. Rows from before
-- (no task) stay usable while a task of their pipeline runs.
ALTER TABLE jobs ADD COLUMN continuation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE continuations ADD COLUMN task_id TEXT REFERENCES tasks(id);
UPDATE jobs
SET continuation = 1,
    spec = json_remove(spec, '$.environment.CIRCLE_CONTINUATION_KEY')
WHERE json_extract(spec, '$.environment.CIRCLE_CONTINUATION_KEY') IS NOT NULL;
