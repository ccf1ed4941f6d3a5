-- Runs that die (a Lambda timeout, an out-of-memory kill, `kill -9`) are recorded as such.
-- A run's lease is the time by which it has either finished or is applying: its fetch is bounded
-- by its own time limit and its wait for the run lock by DB_LOCK_TIMEOUT_SECS, and an applying run
-- holds its ledger row locked until it commits. A `running` row past its lease whose row is not
-- locked belongs to a process that can no longer finish: the next run (or `status`) records it
-- `abandoned`.
ALTER TABLE ingest_runs ADD COLUMN lease_until timestamptz;

-- The runs left `running` by earlier releases: no run of theirs outlived the Lambda's 15 minutes.
UPDATE ingest_runs SET lease_until = started_at + interval '15 minutes' WHERE status = 'running';

ALTER TABLE ingest_runs DROP CONSTRAINT ingest_runs_status_check,
    ADD CONSTRAINT ingest_runs_status_check
        CHECK (status IN ('running', 'succeeded', 'failed', 'duplicate', 'abandoned'));

-- What the search for dead runs reads, at every run: only the few running rows.
CREATE INDEX ingest_runs_running_lease ON ingest_runs (lease_until) WHERE status = 'running';
