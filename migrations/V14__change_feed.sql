-- The change feed (docs/consuming.md): every history row at a position, strictly increasing in
-- commit order and without gaps, for pollers (changes_since), log-based CDC (the publication
-- coingecko_cdc) and EventBridge (the outbox cursor price_feed_published).

-- The last position handed out. A transaction takes its positions by updating this row: the row
-- lock, held to the commit, orders the transactions that write history by their commits, and a
-- rollback takes its positions back. Not a sequence: nextval makes RDS Proxy pin the session, and
-- a rolled-back nextval leaves a gap.
CREATE TABLE price_feed_counter (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    last_seq bigint NOT NULL CHECK (last_seq >= 0)
);

-- Each history row at its position, with what a reader needs. A table of its own rather than a
-- column of price_points: reading after a position is then one range of one index, where a
-- position on the weekly partitions opens every week's index at each read (BENCHMARKS.md,
-- "Change feed"). previous_price: the price the row moved from when it was recorded (NULL for a
-- series' first row); a log, so a row backfilled before it later does not rewrite it.
CREATE TABLE price_feed (
    seq               bigint PRIMARY KEY,
    source_updated_at timestamptz NOT NULL,
    recorded_at       timestamptz NOT NULL,
    run_id            uuid NOT NULL,
    coin_key          integer NOT NULL,
    vs_currency       text NOT NULL,
    price             numeric NOT NULL,
    previous_price    numeric,
    granularity       text
);
-- A position is never rewritten. Deleting old positions is the owner's (docs/consuming.md,
-- "Retention"): the ingest role may not.
CREATE FUNCTION refuse_price_feed_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'price_feed positions are never rewritten: % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'a consumer may have read it already; see docs/consuming.md';
END
$$;
CREATE TRIGGER price_feed_append_only
    BEFORE UPDATE ON price_feed
    FOR EACH ROW EXECUTE FUNCTION refuse_price_feed_change();

-- The history held so far, in the order it was recorded; a row's previous price is the one before
-- it in its series.
INSERT INTO price_feed (seq, source_updated_at, recorded_at, run_id, coin_key, vs_currency, price,
                        previous_price, granularity)
SELECT row_number() OVER (ORDER BY p.recorded_at, p.source_updated_at, p.coin_key, p.vs_currency),
       p.source_updated_at, p.recorded_at, p.run_id, p.coin_key, p.vs_currency, p.price,
       lag(p.price) OVER (PARTITION BY p.coin_key, p.vs_currency ORDER BY p.source_updated_at),
       p.granularity
FROM price_points p;
INSERT INTO price_feed_counter (last_seq) SELECT coalesce(max(seq), 0) FROM price_feed;

-- Appends the history rows a statement just wrote (one currency; `granularity` NULL for live
-- rows) at the next positions, in the order given; returns the last position, NULL for none.
CREATE FUNCTION price_feed_append(
    run uuid, recorded timestamptz, currency text, granularity text,
    keys integer[], times timestamptz[], prices numeric[], previous numeric[]) RETURNS bigint
LANGUAGE sql SET search_path FROM CURRENT AS $$
    WITH taken AS (
        UPDATE price_feed_counter SET last_seq = last_seq + cardinality(keys)
        WHERE cardinality(keys) > 0
        RETURNING last_seq - cardinality(keys) AS base
    ), appended AS (
        INSERT INTO price_feed (seq, source_updated_at, recorded_at, run_id, coin_key, vs_currency,
                                price, previous_price, granularity)
        SELECT t.base + u.n, u.at, recorded, run, u.coin_key, currency, u.price, u.previous, granularity
        FROM taken t, unnest(keys, times, prices, previous) WITH ORDINALITY AS u(coin_key, at, price, previous, n)
        RETURNING seq
    )
    SELECT max(seq) FROM appended
$$;

-- The changes after position `after`, in order, at most `max_rows`: a poller's or a dbt model's
-- cursor (docs/consuming.md). pct_change: the move from previous_price in percent, to 6 decimals.
CREATE FUNCTION changes_since(after bigint, max_rows integer DEFAULT 1000)
RETURNS TABLE (seq bigint, coin_id text, symbol text, vs_currency text, price numeric,
               previous_price numeric, pct_change numeric, source_updated_at timestamptz,
               recorded_at timestamptz, source text, granularity text, run_id uuid)
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT f.seq, c.coin_id, c.symbol, f.vs_currency, f.price, f.previous_price,
           round((f.price - f.previous_price) * 100 / nullif(f.previous_price, 0), 6),
           f.source_updated_at, f.recorded_at,
           CASE WHEN f.granularity IS NULL THEN 'live' ELSE 'backfill' END, f.granularity, f.run_id
    FROM price_feed f JOIN coins c ON c.coin_key = f.coin_key
    WHERE f.seq > after
    ORDER BY f.seq
    LIMIT max_rows
$$;

-- EventBridge's outbox cursor: the last position put on the bus (or passed over: backfilled rows
-- unless asked for), moved only after PutEvents took the events. NULL until the first run with
-- EVENT_BUS_NAME set starts it at its own changes: what was held before is not news.
CREATE TABLE price_feed_published (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    last_seq bigint
);
INSERT INTO price_feed_published (last_seq) VALUES (NULL);

-- For log-based CDC (Debezium, pgoutput): history as one table whatever its weeks, the feed with
-- its positions, and the latest state and the coins to follow the prices. Made at any wal_level;
-- it serves a slot once the server runs with wal_level = logical.
CREATE PUBLICATION coingecko_cdc FOR TABLE price_points, price_feed, quotes, coins
    WITH (publish_via_partition_root = true);
