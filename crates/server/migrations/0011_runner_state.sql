-- What a runner instance is doing, from its claims and runner heartbeats (issue 14): tasks
-- running, how many it runs at once, whether it drains. The listing derives its state (idle,
-- busy N/M, draining, offline) from these and last_connected.
ALTER TABLE runners ADD COLUMN running INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runners ADD COLUMN capacity INTEGER NOT NULL DEFAULT 1;
ALTER TABLE runners ADD COLUMN draining INTEGER NOT NULL DEFAULT 0;
