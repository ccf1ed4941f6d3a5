WITH wanted AS (SELECT unnest($2::text[]) AS coin_id)
SELECT coin_id, at, price FROM (
    -- The price in effect when the window opens: the last change before it, read backwards along
    -- the key's index, so the coin's older history is never read.
    SELECT w.coin_id, $3::timestamptz AS at, before.price
    FROM wanted w CROSS JOIN LATERAL (
        SELECT h.price FROM price_history h
        WHERE coin_key(h.coin_id) = coin_key(w.coin_id) AND h.vs_currency = $1 AND h.source_updated_at <= $3
        ORDER BY h.source_updated_at DESC
        LIMIT 1) before
    UNION ALL
    SELECT w.coin_id, h.source_updated_at, h.price
    FROM wanted w JOIN price_history h
      ON coin_key(h.coin_id) = coin_key(w.coin_id)
    WHERE h.vs_currency = $1 AND h.source_updated_at > $3 AND h.source_updated_at <= $4
    UNION ALL
    -- The latest fetched price, which may have moved less than the threshold since the last change.
    SELECT c.coin_id, c.source_updated_at, c.price
    FROM current_prices c JOIN wanted USING (coin_id)
    WHERE c.vs_currency = $1 AND c.source_updated_at > $3 AND c.source_updated_at <= $4
) steps
ORDER BY coin_id, at
