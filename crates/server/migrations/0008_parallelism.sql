-- Parallelism (issue 10): a job with `parallelism: N` has N tasks, one per node; the job ends
-- once every node did, with the worst of their results. A node's message (why it failed) is
-- kept with its task.
ALTER TABLE jobs ADD COLUMN parallelism INTEGER NOT NULL DEFAULT 1;
ALTER TABLE tasks ADD COLUMN node_index INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN message TEXT;
CREATE INDEX tasks_job_node ON tasks (job_id, node_index);
