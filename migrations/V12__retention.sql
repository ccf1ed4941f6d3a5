-- Retention an operator can trust (docs/tables-and-querying.md, "Retention"): weeks made only where
-- none is attached, never one the owner retired; the ingest role may make only the weeks a run can
-- need; bounds in UTC whatever the session; every partition refuses TRUNCATE; replays a kind.

-- How long history is kept: a period that ends at or before now() - retention is retired (no run
-- or backfill writes into it, or makes it); NULL keeps every period.
ALTER TABLE price_points_partitioning
    ADD COLUMN retention interval CHECK (retention > interval '0');

-- Every period that has had an attached partition, and that partition: one whose partition is no
-- longer attached was retired (detached, dropped). Also tells runs cheaply that a period is there.
CREATE TABLE price_points_periods (
    from_at       timestamptz NOT NULL,
    to_at         timestamptz NOT NULL,
    partition_oid oid NOT NULL,
    PRIMARY KEY (from_at, to_at, partition_oid)
);

-- The attached partitions of price_points and their bounds (MINVALUE and MAXVALUE as infinities;
-- a DEFAULT partition has none and is left out).
CREATE FUNCTION price_points_attached()
RETURNS TABLE (partition regclass, from_at timestamptz, to_at timestamptz)
LANGUAGE sql STABLE SET search_path FROM CURRENT SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' AS $$
    SELECT c.oid::regclass,
           replace(b[1], 'MINVALUE', '-infinity')::timestamptz,
           replace(b[2], 'MAXVALUE', 'infinity')::timestamptz
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid,
         regexp_match(pg_get_expr(c.relpartbound, c.oid),
                      '^FOR VALUES FROM \(''?([^'')]*)''?\) TO \(''?([^'')]*)''?\)$') AS b
    WHERE i.inhparent = to_regclass('price_points') AND NOT i.inhdetachpending AND b IS NOT NULL
$$;

-- Records every attached partition in price_points_periods and guards those without a TRUNCATE
-- trigger (row triggers are cloned onto a partition, TRUNCATE triggers are not).
CREATE FUNCTION price_points_adopt_partitions() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' AS $$
DECLARE
    unguarded regclass;
BEGIN
    IF to_regclass('price_points') IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO price_points_periods (from_at, to_at, partition_oid)
    SELECT a.from_at, a.to_at, a.partition FROM price_points_attached() a
    ON CONFLICT DO NOTHING;
    FOR unguarded IN
        SELECT i.inhrelid::regclass FROM pg_inherits i
        WHERE i.inhparent = 'price_points'::regclass
          AND NOT EXISTS (SELECT FROM pg_trigger t
                          WHERE t.tgrelid = i.inhrelid AND t.tgname = 'price_points_no_truncate')
    LOOP
        EXECUTE format(
            'CREATE TRIGGER price_points_no_truncate BEFORE TRUNCATE ON %s '
            'FOR EACH STATEMENT EXECUTE FUNCTION refuse_price_history_change()',
            unguarded);
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION price_points_adopt_partitions() FROM PUBLIC;

-- Whether `instant` is in a period known to have its partition attached (price_points_periods).
CREATE FUNCTION price_points_known_attached(instant timestamptz) RETURNS boolean
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT EXISTS (
        SELECT FROM price_points_periods r
        JOIN pg_inherits i ON i.inhrelid = r.partition_oid AND i.inhparent = 'price_points'::regclass
                          AND NOT i.inhdetachpending
        WHERE r.from_at <= instant AND instant < r.to_at)
$$;

-- For each time of `times` (NULL: now), why no history row may be written at it (its period ends
-- before the horizon or CoinGecko's first prices, starts after the next, or was retired), or NULL.
CREATE FUNCTION price_points_outside_retention(times timestamptz[]) RETURNS text[]
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path FROM CURRENT
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' AS $$
DECLARE
    period text;
    retention interval;
    period_length interval;
    name_format text;
    first_prices timestamptz := '2013-04-28 00:00:00+00';
BEGIN
    SELECT p.period, p.retention INTO period, retention FROM price_points_partitioning p;
    period_length := ('1 ' || period)::interval;
    name_format := CASE period WHEN 'month' THEN 'YYYY_MM' WHEN 'week' THEN 'IYYY_"w"IW' ELSE 'YYYY_MM_DD' END;
    RETURN ARRAY(
        WITH wanted AS (
            SELECT n, date_trunc(period, coalesce(t, now())) AS first_instant
            FROM unnest(times) WITH ORDINALITY AS u(t, n)
        ),
        periods AS (
            SELECT DISTINCT first_instant, 'price_points_' || to_char(first_instant, name_format) AS name
            FROM wanted
        ),
        -- Read only for a period not known to be attached (made by hand), and then once.
        attached AS MATERIALIZED (SELECT * FROM price_points_attached()),
        judged AS MATERIALIZED (
            SELECT p.first_instant, CASE
                WHEN p.first_instant + period_length <= now() - retention THEN
                    format('%s ends before the retention horizon (price_points_partitioning.retention = %s)',
                           p.name, retention)
                WHEN p.first_instant + period_length <= first_prices THEN
                    format('%s ends before CoinGecko''s first prices (2013-04-28)', p.name)
                WHEN p.first_instant >= date_trunc(period, now()) + 2 * period_length THEN
                    format('%s starts after next %s', p.name, period)
                WHEN price_points_known_attached(p.first_instant) THEN NULL
                WHEN EXISTS (SELECT FROM attached a
                             WHERE a.from_at <= p.first_instant AND p.first_instant < a.to_at) THEN NULL
                WHEN to_regclass(quote_ident(p.name)) IS NOT NULL THEN
                    format('%s is detached: the owner retired it', p.name)
                WHEN EXISTS (SELECT FROM price_points_periods r
                             WHERE r.from_at <= p.first_instant AND p.first_instant < r.to_at) THEN
                    format('%s was dropped: the owner retired it', p.name)
            END AS reason
            FROM periods p
        )
        SELECT j.reason FROM wanted w JOIN judged j USING (first_instant) ORDER BY w.n
    );
END
$$;
REVOKE ALL ON FUNCTION price_points_outside_retention(timestamptz[]) FROM PUBLIC;

-- Makes the partitions of the periods of `first_instants` that no attached partition overlaps;
-- returns how many. No check: its callers judge the periods first.
CREATE FUNCTION price_points_make_periods(first_instants timestamptz[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' AS $$
DECLARE
    period text := (SELECT p.period FROM price_points_partitioning p);
    period_length interval := ('1 ' || period)::interval;
    name_format text := CASE period WHEN 'month' THEN 'YYYY_MM' WHEN 'week' THEN 'IYYY_"w"IW' ELSE 'YYYY_MM_DD' END;
    missing timestamptz;
    made integer := 0;
BEGIN
    FOR missing IN
        WITH wanted AS MATERIALIZED (
            SELECT DISTINCT date_trunc(period, f) AS first_instant
            FROM unnest(first_instants) AS f WHERE f IS NOT NULL
        ),
        unknown AS (SELECT * FROM wanted w WHERE NOT price_points_known_attached(w.first_instant)),
        attached AS MATERIALIZED (SELECT * FROM price_points_attached())
        SELECT u.first_instant FROM unknown u
        WHERE NOT EXISTS (SELECT FROM attached a
                          WHERE a.from_at < u.first_instant + period_length AND u.first_instant < a.to_at)
    LOOP
        -- %L renders in this function's DateStyle and TimeZone: ISO, +00.
        EXECUTE format('CREATE TABLE %I PARTITION OF price_points FOR VALUES FROM (%L) TO (%L)',
                       'price_points_' || to_char(missing, name_format),
                       missing, missing + period_length);
        made := made + 1;
    END LOOP;
    IF made > 0 THEN
        PERFORM price_points_adopt_partitions();
    END IF;
    RETURN made;
END
$$;
REVOKE ALL ON FUNCTION price_points_make_periods(timestamptz[]) FROM PUBLIC;

-- Makes the partitions rows at `times` need, and now's and the next period's; returns how many.
-- Refuses any time outside retention, making nothing. Same signature as V6's: its grant stands.
CREATE OR REPLACE FUNCTION price_history_make_partitions(times timestamptz[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' AS $$
DECLARE
    period text := (SELECT p.period FROM price_points_partitioning p);
    periods timestamptz[] := ARRAY(SELECT DISTINCT date_trunc(period, t) FROM unnest(times) AS t
                                   WHERE t IS NOT NULL);
    ahead timestamptz[] := ARRAY[now(), now() + ('1 ' || period)::interval];
    refused record;
    made integer;
BEGIN
    SELECT r.first_instant, r.reason INTO refused
    FROM unnest(periods, price_points_outside_retention(periods)) AS r(first_instant, reason)
    WHERE r.reason IS NOT NULL
    ORDER BY r.first_instant
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'price_history_make_partitions makes no partition for the % from %: %',
                        period, refused.first_instant, refused.reason
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Runs and backfills leave such rows out and count them as outside_retention. '
                         'The owner brings a retired period back with ALTER TABLE price_points ATTACH PARTITION.';
    END IF;
    made := price_points_make_periods(array_cat(periods, ARRAY(
        SELECT a.t FROM unnest(ahead, price_points_outside_retention(ahead)) AS a(t, reason)
        WHERE a.reason IS NULL)));
    -- One made by hand where no event trigger guarded it.
    IF EXISTS (SELECT FROM pg_inherits i
               WHERE i.inhparent = 'price_points'::regclass
                 AND NOT EXISTS (SELECT FROM pg_trigger t
                                 WHERE t.tgrelid = i.inhrelid AND t.tgname = 'price_points_no_truncate')) THEN
        PERFORM price_points_adopt_partitions();
    END IF;
    RETURN made;
END
$$;

-- The ingest role judges rows with the same grant it makes partitions with.
DO $$
DECLARE
    grantee text;
BEGIN
    FOR grantee IN
        SELECT coalesce(nullif(a.grantee, 0)::regrole::text, 'PUBLIC')
        FROM pg_proc p, aclexplode(p.proacl) a
        WHERE p.oid = 'price_history_make_partitions(timestamptz[])'::regprocedure
          AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION price_points_outside_retention(timestamptz[]) TO %s', grantee);
    END LOOP;
END
$$;

-- Partitions made off the UTC grid (bounds rendered in the session's DateStyle, read back in
-- another zone) are made again on it, as the period each mostly covered and its rows', rows moved.
CREATE FUNCTION price_points_put_on_the_grid() RETURNS void
LANGUAGE plpgsql SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' AS $$
DECLARE
    period text := (SELECT p.period FROM price_points_partitioning p);
    period_length interval := ('1 ' || period)::interval;
    off_grid record;
    names text[] := '{}';
    middles timestamptz[] := '{}';
    row_times timestamptz[];
BEGIN
    FOR off_grid IN
        SELECT * FROM price_points_attached() a
        WHERE a.from_at <> date_trunc(period, a.from_at) OR a.to_at <> a.from_at + period_length
    LOOP
        names := names || ('price_points_off_grid_' || cardinality(names));
        middles := middles || (off_grid.from_at + (off_grid.to_at - off_grid.from_at) / 2);
        EXECUTE format('ALTER TABLE price_points DETACH PARTITION %s', off_grid.partition);
        EXECUTE format('ALTER TABLE %s RENAME TO %I', off_grid.partition, names[cardinality(names)]);
    END LOOP;
    FOR i IN 1 .. cardinality(names) LOOP
        EXECUTE format('SELECT array_agg(DISTINCT source_updated_at) FROM %I', names[i]) INTO row_times;
        PERFORM price_points_make_periods(middles[i] || row_times);
        EXECUTE format(
            'INSERT INTO price_points (source_updated_at, recorded_at, run_id, coin_key, vs_currency,
                                       price, market_cap, total_volume, granularity)
             SELECT source_updated_at, recorded_at, run_id, coin_key, vs_currency, price, market_cap,
                    total_volume, granularity FROM %I', names[i]);
        EXECUTE format('DROP TABLE %I', names[i]);
    END LOOP;
END
$$;
SELECT price_points_put_on_the_grid();
DROP FUNCTION price_points_put_on_the_grid();

-- The periods attached now are known, and every partition is guarded.
SELECT price_points_adopt_partitions();

-- A partition made or attached by hand is guarded and known when its DDL ends; as the owner, on
-- DDL of price_points or its partitions only. Needs a superuser (rds_superuser); else runs do it.
CREATE FUNCTION price_points_adopt_after_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_event_trigger_ddl_commands() c
               WHERE c.objid = to_regclass('price_points')
                  OR EXISTS (SELECT FROM pg_inherits i
                             WHERE i.inhrelid = c.objid AND i.inhparent = to_regclass('price_points'))) THEN
        PERFORM price_points_adopt_partitions();
    END IF;
END
$$;
REVOKE ALL ON FUNCTION price_points_adopt_after_ddl() FROM PUBLIC;
DO $$
BEGIN
    CREATE EVENT TRIGGER price_points_adopt_partitions ON ddl_command_end
        WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE')
        EXECUTE FUNCTION price_points_adopt_after_ddl();
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'no event trigger (%): a partition made by hand gets its TRUNCATE guard at the next run', SQLERRM;
END
$$;

-- Replayed runs are their own kind (health judges the live ones); earlier ones by their trigger ids.
ALTER TABLE ingest_runs DROP CONSTRAINT ingest_runs_kind_check,
    ADD CONSTRAINT ingest_runs_kind_check CHECK (kind IN ('live', 'backfill', 'replay'));
UPDATE ingest_runs SET kind = 'replay' WHERE kind = 'live' AND trigger_id LIKE 'replay:%';

-- A path that does not name pg_temp searches it first: a caller's temporary table named like
-- ours (price_points_periods, pg_inherits) would stand in for it inside the functions the ingest
-- role may call. pg_temp goes last, for every function of the schema that sets its path.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
             WHERE p.pronamespace = current_schema()::regnamespace
               AND (p.prosecdef OR EXISTS (SELECT FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%'))
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', f, current_schema());
    END LOOP;
END
$$;
