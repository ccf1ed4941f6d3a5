WITH incoming AS (
    SELECT *
    FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::numeric[], $8::numeric[],
                $9::int[], $10::numeric[], $11::numeric[], $12::numeric[], $13::numeric[],
                $14::numeric[], $15::numeric[], $16::numeric[], $17::numeric[],
                $18::timestamptz[], $19::bool[], $21::int[], $22::numeric[])
        AS q(coin_id, symbol, name, image, price, market_cap, market_cap_rank,
             total_volume, high_24h, low_24h, price_change_24h, price_change_percentage_24h,
             circulating_supply, total_supply, max_supply, source_updated_at, recordable, held_key,
             reference)
),
clock AS (SELECT $20::timestamptz AS as_of),
-- The dimension. The run read the keys of the coins already held in this transaction, under the
-- run lock, so no other run adds or keys a coin meanwhile: only the coins without one are keyed
-- here, and ids are compared as text only for those. A held coin's row is rewritten only when its
-- description changed or its last_seen_at is over an hour old: rewriting every coin on every run
-- would cost the apply about a third more, for a precision no one needs of "last seen".
new_coins AS (
    INSERT INTO coins (coin_id, symbol, name, image, first_seen_at, last_seen_at)
    SELECT i.coin_id, i.symbol, i.name, i.image, clock.as_of, clock.as_of
    FROM incoming i, clock
    WHERE i.held_key IS NULL
    RETURNING coin_id, coin_key
),
seen_coins AS (
    UPDATE coins c
    SET symbol = i.symbol, name = i.name, image = i.image,
        last_seen_at = greatest(c.last_seen_at, clock.as_of)
    FROM incoming i, clock
    WHERE c.coin_key = i.held_key
      AND ((c.symbol, c.name, c.image) IS DISTINCT FROM (i.symbol, i.name, i.image)
           OR c.last_seen_at < clock.as_of - interval '1 hour')
),
keyed AS (
    SELECT i.*, i.held_key AS coin_key FROM incoming i WHERE i.held_key IS NOT NULL
    UNION ALL
    SELECT i.*, n.coin_key FROM incoming i JOIN new_coins n USING (coin_id) WHERE i.held_key IS NULL
),
history AS (
    INSERT INTO price_points
        (source_updated_at, recorded_at, run_id, coin_key, vs_currency, price, market_cap, total_volume)
    SELECT k.source_updated_at, clock.as_of, $1, k.coin_key, $2, k.price,
           k.market_cap, k.total_volume
    FROM keyed k, clock
    WHERE k.recordable
    ON CONFLICT (coin_key, vs_currency, source_updated_at) DO NOTHING
    RETURNING coin_key, source_updated_at, price
),
-- The rows really written (not those a repeated time skipped) at the feed's next positions, each
-- with the reference it moved from.
feed AS (
    SELECT price_feed_append($1, $20, $2, NULL,
               array_agg(h.coin_key ORDER BY h.source_updated_at, h.coin_key),
               array_agg(h.source_updated_at ORDER BY h.source_updated_at, h.coin_key),
               array_agg(h.price ORDER BY h.source_updated_at, h.coin_key),
               array_agg(k.reference ORDER BY h.source_updated_at, h.coin_key)) AS last_seq
    FROM history h JOIN keyed k ON k.coin_key = h.coin_key
),
upserted AS (
    INSERT INTO quotes AS cur
        (vs_currency, coin_key, price, market_cap, market_cap_rank, total_volume, high_24h, low_24h,
         price_change_24h, price_change_percentage_24h, circulating_supply, total_supply,
         max_supply, source_updated_at, first_seen_at, last_changed_at, recorded_price, recorded_at)
    SELECT $2, k.coin_key, k.price, k.market_cap, k.market_cap_rank, k.total_volume, k.high_24h,
           k.low_24h, k.price_change_24h, k.price_change_percentage_24h, k.circulating_supply,
           k.total_supply, k.max_supply, k.source_updated_at, clock.as_of, clock.as_of,
           CASE WHEN h.coin_key IS NOT NULL THEN k.price END,
           CASE WHEN h.coin_key IS NOT NULL THEN clock.as_of END
    FROM keyed k
    CROSS JOIN clock
    LEFT JOIN history h ON h.coin_key = k.coin_key
    ON CONFLICT (vs_currency, coin_key) DO UPDATE SET
        price = excluded.price,
        market_cap = excluded.market_cap,
        market_cap_rank = excluded.market_cap_rank,
        total_volume = excluded.total_volume,
        high_24h = excluded.high_24h,
        low_24h = excluded.low_24h,
        price_change_24h = excluded.price_change_24h,
        price_change_percentage_24h = excluded.price_change_percentage_24h,
        circulating_supply = excluded.circulating_supply,
        total_supply = excluded.total_supply,
        max_supply = excluded.max_supply,
        source_updated_at = excluded.source_updated_at,
        last_changed_at = excluded.last_changed_at,
        recorded_price = coalesce(excluded.recorded_price, cur.recorded_price),
        recorded_at = coalesce(excluded.recorded_at, cur.recorded_at)
    WHERE excluded.recorded_price IS NOT NULL
       OR (cur.price, cur.market_cap, cur.market_cap_rank, cur.total_volume, cur.high_24h,
           cur.low_24h, cur.price_change_24h, cur.price_change_percentage_24h,
           cur.circulating_supply, cur.total_supply, cur.max_supply, cur.source_updated_at)
          IS DISTINCT FROM
          (excluded.price, excluded.market_cap, excluded.market_cap_rank, excluded.total_volume,
           excluded.high_24h, excluded.low_24h, excluded.price_change_24h,
           excluded.price_change_percentage_24h, excluded.circulating_supply,
           excluded.total_supply, excluded.max_supply, excluded.source_updated_at)
    RETURNING 1
)
SELECT (SELECT count(*) FROM history), (SELECT count(*) FROM upserted), (SELECT last_seq FROM feed)
