-- Test results (issue 10): one row per test case a `store_test_results` step parsed. The
-- task-agent parses the JUnit XML; the server checks and stores the cases.
CREATE TABLE test_results (
    id INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL REFERENCES tasks(id),
    job_id TEXT NOT NULL REFERENCES jobs(id),
    node_index INTEGER NOT NULL,
    name TEXT NOT NULL,
    classname TEXT NOT NULL,
    file TEXT,
    result TEXT NOT NULL,
    message TEXT,
    run_time REAL NOT NULL,
    source TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX test_results_job ON test_results (job_id, id);
-- Flaky tests: the same test of the same job name and revision, in other runs.
CREATE INDEX test_results_test ON test_results (classname, name);
