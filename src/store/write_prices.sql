WITH incoming AS (
    SELECT *
    FROM unnest($3::text[], $4::text[], $5::text[], $6::numeric[], $7::numeric[], $8::int[],
                $9::numeric[], $10::numeric[], $11::numeric[], $12::numeric[], $13::numeric[],
                $14::numeric[], $15::numeric[], $16::numeric[], $17::timestamptz[], $18::bool[],
                $19::bytea[])
        AS q(coin_id, symbol, name, price, market_cap, market_cap_rank,
             total_volume, high_24h, low_24h, price_change_24h, price_change_percentage_24h,
             circulating_supply, total_supply, max_supply, source_updated_at, recordable, coin_key)
),
clock AS (SELECT coalesce($20::timestamptz, now()) AS as_of),
history AS (
    INSERT INTO price_history
        (coin_id, vs_currency, price, market_cap, total_volume, source_updated_at, recorded_at, run_id)
    SELECT coin_id, $2, price, market_cap, total_volume, coalesce(source_updated_at, as_of), as_of, $1
    FROM incoming, clock
    WHERE recordable
    ON CONFLICT (coin_key(coin_id), vs_currency, source_updated_at) DO NOTHING
    RETURNING coin_id
),
upserted AS (
    INSERT INTO current_prices AS cur
        (coin_id, vs_currency, symbol, name, price, market_cap, market_cap_rank,
         total_volume, high_24h, low_24h, price_change_24h, price_change_percentage_24h,
         circulating_supply, total_supply, max_supply, source_updated_at,
         first_seen_at, last_changed_at, recorded_price, recorded_at, coin_key)
    SELECT i.coin_id, $2, i.symbol, i.name, i.price, i.market_cap, i.market_cap_rank,
           i.total_volume, i.high_24h, i.low_24h, i.price_change_24h, i.price_change_percentage_24h,
           i.circulating_supply, i.total_supply, i.max_supply, i.source_updated_at,
           clock.as_of, clock.as_of,
           CASE WHEN h.coin_id IS NOT NULL THEN i.price END,
           CASE WHEN h.coin_id IS NOT NULL THEN clock.as_of END,
           i.coin_key
    FROM incoming i
    CROSS JOIN clock
    LEFT JOIN history h ON h.coin_id = i.coin_id
    ON CONFLICT (coin_key, vs_currency) DO UPDATE SET
        symbol = excluded.symbol,
        name = excluded.name,
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
       OR (cur.symbol, cur.name, cur.price, cur.market_cap, cur.market_cap_rank,
           cur.total_volume, cur.high_24h, cur.low_24h, cur.price_change_24h,
           cur.price_change_percentage_24h, cur.circulating_supply, cur.total_supply,
           cur.max_supply, cur.source_updated_at)
          IS DISTINCT FROM
          (excluded.symbol, excluded.name, excluded.price, excluded.market_cap,
           excluded.market_cap_rank, excluded.total_volume, excluded.high_24h, excluded.low_24h,
           excluded.price_change_24h, excluded.price_change_percentage_24h,
           excluded.circulating_supply, excluded.total_supply, excluded.max_supply,
           excluded.source_updated_at)
    RETURNING 1
)
SELECT (SELECT count(*) FROM history), (SELECT count(*) FROM upserted)
