-- Coin ids are text of any length, but PostgreSQL caps a B-tree entry at 2,704 bytes: with coin_id
-- itself in the keys, one coin with an incompressible 10 KB id failed a whole run. The keys are
-- now on coin_key(coin_id), the SHA-256 of the id's bytes, which is 32 bytes whatever the id.
-- Lookups by coin_id stay index-driven through hash indexes, which hold a 4-byte hash of a value
-- of any length.

-- convert_to() is only STABLE and an index needs IMMUTABLE; with every backslash doubled, bytea's
-- input reads the text's own bytes, one for one. A SQL body of IMMUTABLE parts is inlined, so a
-- query that writes coin_key(coin_id) matches the index.
CREATE FUNCTION coin_key(coin_id text) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT sha256(replace(coin_id, E'\\', E'\\\\')::bytea) $$;

-- current_prices keeps a real primary key (logical replication and CDC tools want one), so the
-- digest is a column beside the id. The ingest writes it (store::coin_key): a generated column would
-- be recomputed by every UPDATE, and a run updates every row.
ALTER TABLE current_prices ADD COLUMN coin_key bytea;
UPDATE current_prices SET coin_key = coin_key(coin_id);
ALTER TABLE current_prices
    ALTER COLUMN coin_key SET NOT NULL,
    DROP CONSTRAINT current_prices_pkey,
    ADD PRIMARY KEY (coin_key, vs_currency);
CREATE INDEX current_prices_coin_id ON current_prices USING hash (coin_id);

-- price_history is the large table: its key is an index on the expression, not a stored column.
-- The index is also the one for a query by coin and time range written with coin_key(coin_id);
-- one written with coin_id uses the hash index and reads the coin's rows in the months asked for.
ALTER TABLE price_history DROP CONSTRAINT price_history_one_row_per_update;
CREATE UNIQUE INDEX price_history_one_row_per_update
    ON price_history (coin_key(coin_id), vs_currency, source_updated_at);
CREATE INDEX price_history_coin_id ON price_history USING hash (coin_id);
