-- Read-only views for analysts. They compute nothing the ingest depends on: dropping or
-- replacing one never touches the data.
--
-- Percentages are exact numeric arithmetic, never float: the move is multiplied by 100 before
-- the one division, so only that division rounds (PostgreSQL keeps at least 16 significant
-- digits), and trim_scale drops the trailing zeros the division adds, so a move of exactly 10%
-- reads 10, not 10.0000000000000000.

-- Each history row next to the previous recorded price of the same coin and currency, in
-- CoinGecko's time order (then in the order written), which is when the prices held; a coin's
-- first row, or a previous price of 0, has no percentage.
CREATE VIEW price_changes AS
SELECT coin_id,
       vs_currency,
       source_updated_at,
       recorded_at,
       run_id,
       price,
       previous_price,
       trim_scale((price - previous_price) * 100 / nullif(previous_price, 0)) AS change_pct
FROM (
    SELECT h.*,
           lag(price) OVER (PARTITION BY coin_id, vs_currency
                            ORDER BY source_updated_at, recorded_at) AS previous_price
    FROM price_history h
) h;

-- The latest fetched values, and how far they are from the last recorded price: a move still
-- below the CDC threshold, or one waiting for CoinGecko's last_updated to move on.
CREATE VIEW latest_prices AS
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
       trim_scale((price - recorded_price) * 100 / nullif(recorded_price, 0)) AS pct_from_recorded
FROM current_prices;

-- OHLC of the recorded prices, per UTC hour and per UTC day of CoinGecko's time. The bucket is
-- truncated in UTC whatever the session's TimeZone, and returned as timestamptz.
-- A recorded price holds until the next change, so a bucket without changes has no row: its price
-- is the close of the latest earlier bucket. Likewise open is the first price recorded inside the
-- bucket, not the price carried in; and high and low see only recorded prices, so moves smaller
-- than the CDC threshold do not show. changes counts the bucket's history rows, a coin's first
-- sighting included.
CREATE VIEW price_ohlc_hourly AS
SELECT coin_id,
       vs_currency,
       date_trunc('hour', source_updated_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS bucket,
       (array_agg(price ORDER BY source_updated_at, recorded_at))[1] AS open,
       max(price) AS high,
       min(price) AS low,
       (array_agg(price ORDER BY source_updated_at DESC, recorded_at DESC))[1] AS close,
       count(*) AS changes
FROM price_history
GROUP BY coin_id, vs_currency, bucket;

-- Days are made of the hours, so the two views cannot disagree.
CREATE VIEW price_ohlc_daily AS
SELECT coin_id,
       vs_currency,
       date_trunc('day', bucket AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS bucket,
       (array_agg(open ORDER BY bucket))[1] AS open,
       max(high) AS high,
       min(low) AS low,
       (array_agg(close ORDER BY bucket DESC))[1] AS close,
       sum(changes)::bigint AS changes
FROM price_ohlc_hourly
GROUP BY 1, 2, 3;
