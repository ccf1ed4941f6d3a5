-- The least a run needs, for the role the function logs in as. Run it as the owner of the tables
-- (the role that migrates), after the migrations, in the ingest's database; then give it to the
-- function's login role:  CREATE ROLE lambda_ingest LOGIN PASSWORD '…' IN ROLE coingecko_cdc_ingest;
-- and deploy with AUTO_MIGRATE=false. It can add and change prices but never rewrite history, and
-- it can change no schema.

DO $$
BEGIN
    CREATE ROLE coingecko_cdc_ingest NOLOGIN;
EXCEPTION WHEN duplicate_object THEN
    NULL; -- roles belong to the server: another database of it may have made this one already
END
$$;

GRANT USAGE ON SCHEMA public TO coingecko_cdc_ingest;
-- SELECT serves the CDC reference, the trigger-id check and the RETURNING of the apply.
GRANT SELECT, INSERT, UPDATE ON coins, quotes TO coingecko_cdc_ingest;
GRANT SELECT, INSERT ON price_points TO coingecko_cdc_ingest;
-- The change feed: a run appends its history rows at the next positions, and moves the events'
-- cursor once they are on the bus; it may neither rewrite nor delete a position.
GRANT SELECT, INSERT ON price_feed TO coingecko_cdc_ingest;
GRANT SELECT, UPDATE ON price_feed_counter, price_feed_published TO coingecko_cdc_ingest;
GRANT EXECUTE ON FUNCTION price_feed_append(uuid, timestamptz, text, text, integer[], timestamptz[],
    numeric[], numeric[]), changes_since(bigint, integer) TO coingecko_cdc_ingest;
-- A run records its own end: only these columns, so that the role cannot rewrite what a run was
-- (its kind, trigger id or start), nor delete one. (The REVOKE narrows an earlier grant of all.)
REVOKE UPDATE ON ingest_runs FROM coingecko_cdc_ingest;
GRANT SELECT, INSERT, UPDATE (status, finished_at, summary, error, calls) ON ingest_runs TO coingecko_cdc_ingest;
GRANT SELECT, INSERT, DELETE ON raw_pages TO coingecko_cdc_ingest;
GRANT SELECT, INSERT, UPDATE ON backfill_jobs, backfill_chunks TO coingecko_cdc_ingest;
-- For `coingecko-cdc status` and `chart` and for analysts: reading is harmless.
GRANT SELECT ON current_prices, price_history, price_changes, latest_prices, price_ohlc_hourly,
    price_ohlc_daily TO coingecko_cdc_ingest;
-- Runs make the weekly partitions of price_points through this function, which acts as the owner
-- and makes only the weeks a run can need; the second tells which rows are outside retention.
GRANT EXECUTE ON FUNCTION price_history_make_partitions(timestamptz[]),
    price_points_outside_retention(timestamptz[]) TO coingecko_cdc_ingest;
