-- The store layer (issue 9). Every log chunk and step event checks its step index against the
-- job's step count; keeping the count in a column, written when the job is made, spares reading
-- it out of the JSON spec on every request (and keeps that hot query free of SQLite's JSON
-- functions). Jobs from before get their count from their spec, once.
ALTER TABLE jobs ADD COLUMN step_count INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET step_count = COALESCE(json_array_length(spec, '$.steps'), 0);
