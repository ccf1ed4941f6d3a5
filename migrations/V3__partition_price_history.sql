-- price_history becomes range-partitioned by month of source_updated_at, so that retention is a
-- DROP of an old month rather than a DELETE (which the append-only rule refuses anyway), and a
-- query by coin and time range reads only the months it asks for. Existing rows move over.

-- The views read price_history and would keep pointing at the old table: each view of this
-- schema is kept with its definition and grants, dropped, and made again after the swap.
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

ALTER TABLE price_history RENAME TO price_history_unpartitioned;

CREATE TABLE price_history (
    LIKE price_history_unpartitioned INCLUDING DEFAULTS,
    FOREIGN KEY (run_id) REFERENCES ingest_runs (run_id),
    -- Also the index of every query by coin and time range, in each month.
    CONSTRAINT price_history_one_row_per_update UNIQUE (coin_id, vs_currency, source_updated_at)
) PARTITION BY RANGE (source_updated_at);

-- Row triggers are cloned onto every partition; TRUNCATE triggers are not, so
-- price_history_make_partitions adds one to each partition it makes.
CREATE TRIGGER price_history_append_only
    BEFORE UPDATE OR DELETE ON price_history
    FOR EACH ROW EXECUTE FUNCTION refuse_price_history_change();
CREATE TRIGGER price_history_no_truncate
    BEFORE TRUNCATE ON price_history
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_price_history_change();

-- Makes the monthly partitions (UTC months, named price_history_YYYY_MM) that rows at `times`
-- need, if missing; returns how many it made. SECURITY DEFINER: it runs as the owner of the
-- tables, so the ingest role can make partitions without any right to change the schema.
CREATE FUNCTION price_history_make_partitions(times timestamptz[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    first_day timestamp;
    partition_name text;
    made integer := 0;
BEGIN
    FOR first_day IN
        SELECT DISTINCT date_trunc('month', t AT TIME ZONE 'UTC') FROM unnest(times) AS t
        WHERE t IS NOT NULL
    LOOP
        partition_name := 'price_history_' || to_char(first_day, 'YYYY_MM');
        CONTINUE WHEN to_regclass(quote_ident(partition_name)) IS NOT NULL;
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF price_history FOR VALUES FROM (%L) TO (%L)',
            partition_name, first_day AT TIME ZONE 'UTC', (first_day + interval '1 month') AT TIME ZONE 'UTC');
        EXECUTE format(
            'CREATE TRIGGER price_history_no_truncate BEFORE TRUNCATE ON %I '
            'FOR EACH STATEMENT EXECUTE FUNCTION refuse_price_history_change()',
            partition_name);
        made := made + 1;
    END LOOP;
    RETURN made;
END
$$;
REVOKE ALL ON FUNCTION price_history_make_partitions(timestamptz[]) FROM PUBLIC;

SELECT price_history_make_partitions(array(
    SELECT DISTINCT date_trunc('month', source_updated_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
    FROM price_history_unpartitioned
    UNION SELECT now() UNION SELECT now() + interval '1 month'));
INSERT INTO price_history SELECT * FROM price_history_unpartitioned;
-- The grants on history (docs/ingest-role.sql) follow the table.
DO $$
DECLARE
    grant_row record;
BEGIN
    FOR grant_row IN
        SELECT a.privilege_type, coalesce(nullif(a.grantee, 0)::regrole::text, 'PUBLIC') AS grantee
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = 'price_history_unpartitioned'::regclass AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('GRANT %s ON price_history TO %s', grant_row.privilege_type, grant_row.grantee);
    END LOOP;
END
$$;
DROP TABLE price_history_unpartitioned;

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
