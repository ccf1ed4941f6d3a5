-- The requests a run made before it failed: CoinGecko counted them, so the monthly call budget
-- (COINGECKO_MONTHLY_CALL_BUDGET) does too. A finished run's are in its summary; NULL before V13.
ALTER TABLE ingest_runs ADD COLUMN calls integer;

-- A backfill's granularity is the one its rows carry. Before V13 it was the one asked for, which
-- on the Demo plan can differ (a daily window of 90 days or less comes hourly): take the chunks'.
UPDATE backfill_jobs j SET granularity = c.granularity
FROM (SELECT DISTINCT ON (job_id) job_id, granularity FROM backfill_chunks
      ORDER BY job_id, position) c
WHERE c.job_id = j.job_id AND c.granularity <> j.granularity;
