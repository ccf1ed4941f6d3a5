-- Backfill: history from /coins/{id}/market_chart/range for the time before a coin's first live
-- row in a currency, kept apart from what the live runs saw.

-- Where a history row came from: NULL for a live run's row, else the granularity of the backfilled
-- series ('hourly' or 'daily'). Live rows, nearly all of them, cost no byte more, and adding the
-- column rewrites nothing. No CHECK on it: on the partitioned table one would scan every partition
-- under an exclusive lock; the ingest is its only writer.
ALTER TABLE price_points ADD COLUMN granularity text;

CREATE OR REPLACE VIEW price_history AS
SELECT c.coin_id, p.vs_currency, p.price, p.market_cap, p.total_volume, p.source_updated_at,
       p.recorded_at, p.run_id,
       CASE WHEN p.granularity IS NULL THEN 'live' ELSE 'backfill' END AS source,
       p.granularity
FROM price_points p JOIN coins c USING (coin_key);

-- The ledger holds live runs and backfill invocations; health and freshness read the live runs.
ALTER TABLE ingest_runs ADD COLUMN kind text NOT NULL DEFAULT 'live'
    CHECK (kind IN ('live', 'backfill'));

-- One backfill. Its window and granularity are fixed when it starts, so that every invocation
-- continues the same chunks; the invocation working on it holds a lease until a time, so that a
-- second one stops instead of fetching the same chunks, and a dead one's lease runs out.
CREATE TABLE backfill_jobs (
    job_id       uuid PRIMARY KEY,
    window_from  timestamptz NOT NULL,
    window_to    timestamptz NOT NULL,
    granularity  text NOT NULL CHECK (granularity IN ('hourly', 'daily')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    leased_by    uuid,
    leased_until timestamptz
);

-- One request of a backfill: a coin, a currency and a time range, worked in `position` order (a
-- coin's chunks oldest first, as the rule walks its series).
CREATE TABLE backfill_chunks (
    job_id       uuid NOT NULL REFERENCES backfill_jobs,
    position     integer NOT NULL,
    coin_key     integer NOT NULL REFERENCES coins,
    vs_currency  text NOT NULL,
    chunk_from   timestamptz NOT NULL,
    chunk_to     timestamptz NOT NULL,
    granularity  text NOT NULL CHECK (granularity IN ('hourly', 'daily')),
    api_interval text,
    state        text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'refused')),
    -- Requests spent on it, retries included, also when they failed, and when the last was made
    -- (the monthly call budget counts them by it).
    calls        integer NOT NULL DEFAULT 0,
    last_call_at timestamptz,
    points       integer,
    recorded     integer,
    detail       text,
    done_at      timestamptz,
    run_id       uuid REFERENCES ingest_runs (run_id),
    PRIMARY KEY (job_id, position),
    UNIQUE (job_id, coin_key, vs_currency, chunk_from)
);
CREATE INDEX backfill_chunks_pending ON backfill_chunks (job_id, position) WHERE state = 'pending';
CREATE INDEX backfill_chunks_last_call_at ON backfill_chunks (last_call_at);
