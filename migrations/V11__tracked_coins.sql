-- The tracked set: the coins of the last run's answer (its TOP_N, or its COIN_IDS). A coin that
-- left them keeps its rows and its history, but says so: `WHERE tracked` is the set the runs
-- track now, and backfill takes its coins from it. Each run rewrites only the coins whose flag
-- changes (coins has room for HOT updates, and no index reads the flag).
ALTER TABLE coins ADD COLUMN tracked boolean NOT NULL DEFAULT false;
-- Until the next run says otherwise, every coin with a latest price is taken as tracked, as before.
UPDATE coins c SET tracked = true WHERE EXISTS (SELECT 1 FROM quotes q WHERE q.coin_key = c.coin_key);

-- A latest price stamped in the future (runs took any last_updated before) would now hold every
-- later observation of the coin off as older: such a stamp is forgotten, so the next run wins.
UPDATE quotes SET source_updated_at = NULL WHERE source_updated_at > now() + interval '5 minutes';

CREATE OR REPLACE VIEW current_prices AS
SELECT c.coin_id, q.vs_currency, c.symbol, c.name, q.price, q.market_cap, q.market_cap_rank,
       q.total_volume, q.high_24h, q.low_24h, q.price_change_24h, q.price_change_percentage_24h,
       q.circulating_supply, q.total_supply, q.max_supply, q.source_updated_at, q.first_seen_at,
       q.last_changed_at, q.recorded_price, q.recorded_at, q.coin_key, c.tracked
FROM quotes q JOIN coins c USING (coin_key);

CREATE OR REPLACE VIEW latest_prices AS
SELECT coin_id,
       vs_currency,
       symbol,
       name,
       price,
       market_cap,
       market_cap_rank,
       total_volume,
       price_change_percentage_24h,
       source_updated_at,
       last_changed_at,
       recorded_price,
       recorded_at,
       trim_scale((price - recorded_price) * 100 / nullif(recorded_price, 0)) AS pct_from_recorded,
       tracked
FROM current_prices;

-- Health follows the last run to finish, which is not always the last to start.
CREATE INDEX ingest_runs_finished_at ON ingest_runs (finished_at DESC);
