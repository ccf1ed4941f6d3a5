-- A coin dimension with a small integer key, and the price tables keyed by it:
--   coins         one row per CoinGecko id (any length, stored verbatim, unique), its latest symbol,
--                 name and image, and when it was first and last seen;
--   quotes        the latest fetched values per (vs_currency, coin_key), with the CDC reference;
--   price_points  the append-only history, per (coin_key, vs_currency, source_updated_at), in
--                 weekly partitions (BENCHMARKS.md, "History at scale, by partition length").
-- The names analysts know come back as views: current_prices and price_history have the columns
-- they had, so every existing query keeps working, and a query by coin_id and time is index-driven
-- (the id is looked up once in coins, then the history is read along its key).
--
-- The uniqueness of ids of any length is paid once per coin, in coins (a digest index); a history
-- row carries a 4-byte key instead of the id, and its index (coin_key, vs_currency,
-- source_updated_at) is 24 bytes a row instead of 56 plus a hash index.

-- The views of this schema read the tables being replaced: each is kept with its definition and
-- grants, dropped, and made again at the end, reading the views of the same names.
CREATE TEMPORARY TABLE saved_views ON COMMIT DROP AS
SELECT c.oid, c.relname::text AS name, pg_get_viewdef(c.oid) AS definition, c.relacl, c.relowner
FROM pg_class c
WHERE c.relkind = 'v' AND c.relnamespace = current_schema()::regnamespace;

DO $$
DECLARE
    saved record;
BEGIN
    -- Newest first: a view is dropped before the views it reads.
    FOR saved IN SELECT name FROM saved_views ORDER BY oid DESC LOOP
        EXECUTE format('DROP VIEW %I', saved.name);
    END LOOP;
END
$$;

-- Grants `privileges` (those of them `source` has given) on `target` to whoever had them on `source`.
CREATE FUNCTION pg_temp.copy_grants(source regclass, target text, privileges text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    grant_row record;
BEGIN
    FOR grant_row IN
        SELECT a.privilege_type, coalesce(nullif(a.grantee, 0)::regrole::text, 'PUBLIC') AS grantee
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = source AND a.grantee <> c.relowner AND a.privilege_type = ANY (privileges)
    LOOP
        EXECUTE format('GRANT %s ON %I TO %s', grant_row.privilege_type, target, grant_row.grantee);
    END LOOP;
END
$$;

-- V5's digest of an id, now used only by the dimension's uniqueness.
ALTER FUNCTION coin_key(text) RENAME TO coin_id_digest;

CREATE TABLE coins (
    coin_key      integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    coin_id       text NOT NULL,
    symbol        text,
    name          text,
    image         text,
    first_seen_at timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL
) WITH (fillfactor = 50); -- runs update last_seen_at hourly: room for HOT updates, as in quotes
-- A B-tree entry is capped at 2,704 bytes, so the id's uniqueness is on its 32-byte digest; the
-- lookups by coin_id go through a hash index, which holds 4 bytes whatever the id's length.
CREATE UNIQUE INDEX coins_one_row_per_id ON coins (coin_id_digest(coin_id));
CREATE INDEX coins_coin_id ON coins USING hash (coin_id);

-- Keys in order of first sighting. last_seen_at: V5 kept when a coin's row last changed, which is
-- every run in which CoinGecko's last_updated moved.
INSERT INTO coins (coin_id, symbol, name, first_seen_at, last_seen_at)
SELECT coin_id, symbol, name, first_seen_at, last_seen_at
FROM (
    SELECT DISTINCT ON (coin_id) coin_id, symbol, name,
           min(first_seen_at) OVER (PARTITION BY coin_id) AS first_seen_at,
           max(last_changed_at) OVER (PARTITION BY coin_id) AS last_seen_at
    FROM current_prices
    ORDER BY coin_id, last_changed_at DESC
) latest
ORDER BY first_seen_at, coin_id;
-- History of a coin without a current row (none is made so, but no row may be lost).
INSERT INTO coins (coin_id, first_seen_at, last_seen_at)
SELECT h.coin_id, min(h.recorded_at), max(h.recorded_at)
FROM price_history h
WHERE NOT EXISTS (SELECT FROM coins c WHERE c.coin_id = h.coin_id)
GROUP BY h.coin_id
ORDER BY 2, 1;

CREATE TABLE quotes (
    vs_currency                 text NOT NULL,
    coin_key                    integer NOT NULL REFERENCES coins (coin_key),
    price                       numeric NOT NULL,
    market_cap                  numeric,
    market_cap_rank             integer,
    total_volume                numeric,
    high_24h                    numeric,
    low_24h                     numeric,
    price_change_24h            numeric,
    price_change_percentage_24h numeric,
    circulating_supply          numeric,
    total_supply                numeric,
    max_supply                  numeric,
    source_updated_at           timestamptz,
    first_seen_at               timestamptz NOT NULL,
    last_changed_at             timestamptz NOT NULL,
    -- The CDC reference: the price of this coin's last history row in this currency and when it
    -- was written, kept here so that a run never has to search the history for it.
    recorded_price              numeric,
    recorded_at                 timestamptz,
    -- Currency first: "every coin's latest price in usd" is one range of this index, and a run,
    -- which writes one currency, touches its rows in key order.
    PRIMARY KEY (vs_currency, coin_key)
) WITH (fillfactor = 50);

INSERT INTO quotes
SELECT cp.vs_currency, c.coin_key, cp.price, cp.market_cap, cp.market_cap_rank, cp.total_volume,
       cp.high_24h, cp.low_24h, cp.price_change_24h, cp.price_change_percentage_24h,
       cp.circulating_supply, cp.total_supply, cp.max_supply, cp.source_updated_at,
       cp.first_seen_at, cp.last_changed_at, cp.recorded_price, cp.recorded_at
FROM current_prices cp JOIN coins c ON c.coin_id = cp.coin_id
ORDER BY cp.vs_currency, c.coin_key;

-- Columns by alignment (the 8-byte ones first), so that a row has no padding.
CREATE TABLE price_points (
    source_updated_at timestamptz NOT NULL,
    recorded_at       timestamptz NOT NULL,
    run_id            uuid NOT NULL,
    coin_key          integer NOT NULL,
    vs_currency       text NOT NULL,
    price             numeric NOT NULL,
    market_cap        numeric,
    total_volume      numeric
) PARTITION BY RANGE (source_updated_at);

-- How long the partitions of price_points are: 'week' unless the owner chose otherwise. Changing it
-- is for an empty history only: partitions of another length would overlap those that exist.
CREATE TABLE price_points_partitioning (
    period   text NOT NULL CHECK (period IN ('month', 'week', 'day')),
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row)
);
INSERT INTO price_points_partitioning (period) VALUES ('week');

-- Makes the partitions that rows at `times` need, and those of now and of the next period (ahead of
-- the first run that needs it), if missing; returns how many it made. UTC periods, named
-- price_points_2024_09 (month), price_points_2024_w36 (ISO week) or price_points_2024_09_30 (day).
-- SECURITY DEFINER: it runs as the owner, so the ingest role needs no right to change the schema.
-- Same name and arguments as V3's, so its grant to the ingest role stands.
CREATE OR REPLACE FUNCTION price_history_make_partitions(times timestamptz[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    period text := (SELECT p.period FROM price_points_partitioning p);
    name_format text := CASE period WHEN 'month' THEN 'YYYY_MM' WHEN 'week' THEN 'IYYY_"w"IW' ELSE 'YYYY_MM_DD' END;
    period_length interval := ('1 ' || period)::interval;
    first_instant timestamp;
    partition_name text;
    made integer := 0;
BEGIN
    FOR first_instant IN
        SELECT DISTINCT date_trunc(period, t AT TIME ZONE 'UTC')
        FROM unnest(times || ARRAY[now(), now() + period_length]) AS t
        WHERE t IS NOT NULL
    LOOP
        partition_name := 'price_points_' || to_char(first_instant, name_format);
        CONTINUE WHEN to_regclass(quote_ident(partition_name)) IS NOT NULL;
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF price_points FOR VALUES FROM (%L) TO (%L)',
            partition_name, first_instant AT TIME ZONE 'UTC', (first_instant + period_length) AT TIME ZONE 'UTC');
        -- Row triggers are cloned onto every partition; TRUNCATE triggers are not.
        EXECUTE format(
            'CREATE TRIGGER price_points_no_truncate BEFORE TRUNCATE ON %I '
            'FOR EACH STATEMENT EXECUTE FUNCTION refuse_price_history_change()',
            partition_name);
        made := made + 1;
    END LOOP;
    RETURN made;
END
$$;

-- A partition for every week of every month V5 held (V5's partitions are price_history_YYYY_MM).
SELECT price_history_make_partitions(array(
    SELECT generate_series(first_day, first_day + interval '1 month' - interval '1 day', interval '1 day')
    FROM (
        SELECT to_date(right(c.relname, 7), 'YYYY_MM')::timestamp AT TIME ZONE 'UTC' AS first_day
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'price_history'::regclass
    ) months));

-- Rows first, then the key and the foreign keys: building an index once, and checking the keys
-- with one join, is far faster than maintaining them row by row.
INSERT INTO price_points
SELECT h.source_updated_at, h.recorded_at, h.run_id, c.coin_key, h.vs_currency, h.price,
       h.market_cap, h.total_volume
FROM price_history h JOIN coins c ON c.coin_id = h.coin_id;

ALTER TABLE price_points
    ADD CONSTRAINT price_points_one_row_per_update PRIMARY KEY (coin_key, vs_currency, source_updated_at),
    ADD FOREIGN KEY (coin_key) REFERENCES coins (coin_key),
    ADD FOREIGN KEY (run_id) REFERENCES ingest_runs (run_id);

CREATE TRIGGER price_points_append_only
    BEFORE UPDATE OR DELETE ON price_points
    FOR EACH ROW EXECUTE FUNCTION refuse_price_history_change();
CREATE TRIGGER price_points_no_truncate
    BEFORE TRUNCATE ON price_points
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_price_history_change();

-- The grants follow the data (docs/ingest-role.sql): whoever could write current_prices can write
-- quotes and coins; whoever could append to history can append to price_points.
SELECT pg_temp.copy_grants('current_prices', 'quotes', '{SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER}');
SELECT pg_temp.copy_grants('current_prices', 'coins', '{SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER}');
SELECT pg_temp.copy_grants('price_history', 'price_points', '{SELECT,INSERT,DELETE,UPDATE,TRUNCATE,REFERENCES,TRIGGER}');

CREATE TEMPORARY TABLE saved_readers ON COMMIT DROP AS
SELECT 'current_prices' AS name, relacl, relowner FROM pg_class WHERE oid = 'current_prices'::regclass
UNION ALL
SELECT 'price_history', relacl, relowner FROM pg_class WHERE oid = 'price_history'::regclass;

DROP TABLE price_history;
DROP TABLE current_prices;

-- The names analysts know, with the columns they had.
CREATE VIEW current_prices AS
SELECT c.coin_id, q.vs_currency, c.symbol, c.name, q.price, q.market_cap, q.market_cap_rank,
       q.total_volume, q.high_24h, q.low_24h, q.price_change_24h, q.price_change_percentage_24h,
       q.circulating_supply, q.total_supply, q.max_supply, q.source_updated_at, q.first_seen_at,
       q.last_changed_at, q.recorded_price, q.recorded_at, q.coin_key
FROM quotes q JOIN coins c USING (coin_key);

CREATE VIEW price_history AS
SELECT c.coin_id, p.vs_currency, p.price, p.market_cap, p.total_volume, p.source_updated_at,
       p.recorded_at, p.run_id
FROM price_points p JOIN coins c USING (coin_key);
-- Changing history through the view is refused as through the table, with the same message.
CREATE TRIGGER price_history_append_only
    INSTEAD OF UPDATE OR DELETE ON price_history
    FOR EACH ROW EXECUTE FUNCTION refuse_price_history_change();

-- Readers of the tables read the views.
DO $$
DECLARE
    saved record;
    grant_row record;
BEGIN
    FOR saved IN SELECT * FROM saved_readers LOOP
        FOR grant_row IN
            SELECT coalesce(nullif(a.grantee, 0)::regrole::text, 'PUBLIC') AS grantee
            FROM aclexplode(saved.relacl) a
            WHERE a.grantee <> saved.relowner AND a.privilege_type = 'SELECT'
        LOOP
            EXECUTE format('GRANT SELECT ON %I TO %s', saved.name, grant_row.grantee);
        END LOOP;
    END LOOP;
END
$$;

DO $$
DECLARE
    saved record;
    grant_row record;
BEGIN
    FOR saved IN SELECT * FROM saved_views ORDER BY oid LOOP
        EXECUTE format('CREATE VIEW %I AS %s', saved.name, saved.definition);
        FOR grant_row IN
            SELECT a.privilege_type, coalesce(nullif(a.grantee, 0)::regrole::text, 'PUBLIC') AS grantee
            FROM aclexplode(saved.relacl) a
            WHERE a.grantee <> saved.relowner
        LOOP
            EXECUTE format('GRANT %s ON %I TO %s', grant_row.privilege_type, saved.name, grant_row.grantee);
        END LOOP;
    END LOOP;
END
$$;
