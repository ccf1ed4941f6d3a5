WITH wanted AS (
    SELECT c.coin_id, c.coin_key FROM coins c WHERE c.coin_id = ANY($2::text[])
)
SELECT coin_id, at, price FROM (
    -- The price in effect when the window opens: the last change before it, read backwards along
    -- the key, so the coin's older history is never read.
    SELECT w.coin_id, $3::timestamptz AS at, before.price
    FROM wanted w CROSS JOIN LATERAL (
        SELECT p.price FROM price_points p
        WHERE p.coin_key = w.coin_key AND p.vs_currency = $1 AND p.source_updated_at <= $3
        ORDER BY p.source_updated_at DESC
        LIMIT 1) before
    UNION ALL
    SELECT w.coin_id, p.source_updated_at, p.price
    FROM wanted w JOIN price_points p ON p.coin_key = w.coin_key
    WHERE p.vs_currency = $1 AND p.source_updated_at > $3 AND p.source_updated_at <= $4
    UNION ALL
    -- The latest fetched price, which may have moved less than the threshold since the last change.
    SELECT w.coin_id, q.source_updated_at, q.price
    FROM wanted w JOIN quotes q ON q.coin_key = w.coin_key
    WHERE q.vs_currency = $1 AND q.source_updated_at > $3 AND q.source_updated_at <= $4
) steps
ORDER BY coin_id, at
