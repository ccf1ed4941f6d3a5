-- Raw pages are kept as the text CoinGecko sent, compressed with lz4: storing 70 pages of the
-- whole universe took 700 ms as jsonb (parsed, then compressed with pglz) and takes about 110 ms
-- so, for 17 % more disk (BENCHMARKS.md, "Ways of storing the raw pages"). `payload::jsonb` reads
-- one as JSON: the only escapes jsonb refuses, a NUL and an unpaired surrogate, are stored as U+FFFD.
-- Rewrites the table once: with a long RAW_RETENTION_DAYS, migrate at a quiet time.
ALTER TABLE raw_pages ALTER COLUMN payload TYPE text USING payload::text;

-- lz4 needs PostgreSQL 14 or later built with it (RDS and Aurora are); otherwise pglz stays.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE raw_pages ALTER COLUMN payload SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported OR syntax_error THEN
    RAISE NOTICE 'raw_pages.payload keeps pglz compression: this server has no lz4 (%)', SQLERRM;
END
$$;
