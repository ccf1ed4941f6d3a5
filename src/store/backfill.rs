//! The backfill's tables: jobs and their chunks, the lease that keeps one invocation at work, and
//! the apply of one chunk. Each chunk lands in its own transaction, under the run lock.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use tokio_postgres::GenericClient;

use super::apply::Apply;
use super::error::{During, StoreError};
use super::params::typed;
use super::Store;
use crate::backfill::{Chunk, Granularity};
use crate::market::ChartPoint;
use crate::status::{BackfillProgress, Coverage, CoverageState, PairCoverage};

/// A backfill, as fixed when it started: its window, and the granularity its rows carry (the
/// plan's, which on the Demo plan may differ from the one asked for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillJob {
    pub job_id: Uuid,
    pub window_from: DateTime<Utc>,
    pub window_to: DateTime<Utc>,
    pub granularity: Granularity,
}

/// Which coins a new backfill covers.
#[derive(Debug, Clone)]
pub enum BackfillCoins {
    /// These ids; those never seen are added to `coins`.
    Ids(Vec<String>),
    /// The coins the live runs price in `vs_currency`, the first `limit` by market cap rank.
    Tracked { vs_currency: String, limit: i64 },
}

/// A backfill to start unless one is open: its window, its coins, currencies and chunks.
#[derive(Debug, Clone)]
pub struct NewBackfill {
    pub window: BackfillWindow,
    pub coins: BackfillCoins,
    pub currencies: Vec<String>,
    pub chunks: Vec<Chunk>,
}

/// The time a backfill covers, at the granularity its rows carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackfillWindow {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The window ends now (`--days`, or no `--to`): its last step (an hour, a day) is not
    /// missed when an earlier backfill ended in it (see [`COVERAGE`]).
    pub ends_now: bool,
    pub granularity: Granularity,
}

/// What an invocation found when it asked for work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This invocation holds the job's lease.
    Leased { job: BackfillJob, created: bool },
    /// Another invocation holds it until then.
    Busy {
        job: BackfillJob,
        until: DateTime<Utc>,
    },
    /// Every coin and currency asked for is covered over the window.
    Covered,
    /// No coin to backfill.
    NoCoins,
}

/// The next request of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingChunk {
    pub position: i32,
    pub coin_key: i32,
    pub coin_id: String,
    pub vs_currency: String,
    pub chunk: Chunk,
}

/// What the history of a coin and currency holds around a chunk's span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesAround {
    /// The price of the last row before the span: the rule's reference.
    pub reference: Option<Decimal>,
    /// The rows in the span, in time order: the rule walks among them.
    pub held: Vec<(DateTime<Utc>, Decimal)>,
    /// The coin's first live row: what comes at or after it is the live runs' to record.
    pub first_live: Option<DateTime<Utc>>,
}

impl Apply<'_> {
    /// Leases the open backfill to `invocation` until `lease_until`, whatever it covers; when none
    /// is open, starts `new` with chunks for only the coins and currencies that earlier backfills
    /// do not cover over its window ([`COVERAGE`]), and commits. Under the run lock (this
    /// transaction's), so that two invocations never both start one.
    pub async fn claim_backfill(
        self,
        invocation: Uuid,
        lease_until: DateTime<Utc>,
        new: &NewBackfill,
    ) -> Result<Claim, StoreError> {
        const JOB: &str =
            "SELECT job_id, window_from, window_to, granularity, leased_by, leased_until, now() FROM backfill_jobs";
        let open = self
            .bounded(
                "reading the open backfill",
                self.tx.query_typed_opt(
                    &format!("{JOB} WHERE finished_at IS NULL ORDER BY created_at LIMIT 1"),
                    &[],
                ),
            )
            .await?;
        if let Some(row) = open {
            let job = job_from(&row)?;
            let (holder, until, now): (Option<Uuid>, Option<DateTime<Utc>>, DateTime<Utc>) =
                (row.get(4), row.get(5), row.get(6));
            if let (Some(holder), Some(until)) = (holder, until) {
                if holder != invocation && until > now {
                    return Ok(Claim::Busy { job, until });
                }
            }
            self.within(
                "leasing the backfill",
                lease(&self.tx, job.job_id, invocation, lease_until),
            )
            .await?;
            self.tx.commit().await.during("leasing the backfill")?;
            return Ok(Claim::Leased {
                job,
                created: false,
            });
        }
        if let BackfillCoins::Ids(ids) = &new.coins {
            self.bounded(
                "adding the coins to backfill",
                self.tx.execute_typed(
                    "INSERT INTO coins (coin_id, first_seen_at, last_seen_at)
                     SELECT id, now(), now() FROM unnest($1::text[]) AS id
                     WHERE NOT EXISTS (SELECT 1 FROM coins c WHERE c.coin_id = id)",
                    &[typed(ids)],
                ),
            )
            .await?;
        }
        let coins = self
            .bounded(
                "reading the coins to backfill",
                coin_keys(&self.tx, &new.coins),
            )
            .await?;
        if coins.is_empty() {
            return Ok(Claim::NoCoins);
        }
        let pairs = self
            .bounded(
                "reading what earlier backfills cover",
                coverage(&self.tx, &coins, &new.currencies, &new.window),
            )
            .await?;
        // Coin by coin, each currency's chunks oldest first: the order the rule walks a series.
        let mut keys = Vec::new();
        let mut currencies = Vec::new();
        let mut chunks = Vec::new();
        for pair in pairs
            .iter()
            .filter(|p| p.coverage.state != CoverageState::Covered)
        {
            for chunk in new.chunks.iter().filter(|c| pair.needs(c, &new.window)) {
                keys.push(pair.coin_key);
                currencies.push(pair.coverage.vs_currency.as_str());
                chunks.push(chunk);
            }
        }
        if chunks.is_empty() {
            return Ok(Claim::Covered);
        }
        let job = BackfillJob {
            job_id: Uuid::now_v7(),
            window_from: new.window.from,
            window_to: new.window.to,
            granularity: new.window.granularity,
        };
        self.bounded("starting the backfill", self.tx.execute_typed(
            "INSERT INTO backfill_jobs (job_id, window_from, window_to, granularity, leased_by, leased_until)
             VALUES ($1, $2, $3, $4, $5, $6)", &[typed(&job.job_id), typed(&job.window_from), typed(&job.window_to), typed(&job.granularity.as_str()), typed(&invocation), typed(&lease_until)])).await?;
        let froms: Vec<DateTime<Utc>> = chunks.iter().map(|c| c.from).collect();
        let tos: Vec<DateTime<Utc>> = chunks.iter().map(|c| c.to).collect();
        let granularities: Vec<&str> = chunks.iter().map(|c| c.granularity.as_str()).collect();
        let intervals: Vec<Option<&str>> = chunks.iter().map(|c| c.interval).collect();
        self.bounded("planning the backfill's chunks", self.tx.execute_typed(
            "INSERT INTO backfill_chunks
                 (job_id, position, coin_key, vs_currency, chunk_from, chunk_to, granularity, api_interval)
             SELECT $1, n::int, k, c, f, t, g, i
             FROM unnest($2::int[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::text[], $7::text[])
                 WITH ORDINALITY AS x(k, c, f, t, g, i, n)", &[typed(&job.job_id), typed(&keys), typed(&currencies), typed(&froms), typed(&tos), typed(&granularities), typed(&intervals)])).await?;
        self.tx.commit().await.during("starting the backfill")?;
        Ok(Claim::Leased { job, created: true })
    }
}

impl Store {
    /// The job's next pending chunk, in order.
    pub async fn next_chunk(&self, job_id: Uuid) -> Result<Option<PendingChunk>, StoreError> {
        let row = self
            .client
            .query_typed_opt(
                "SELECT b.position, b.coin_key, c.coin_id, b.vs_currency, b.chunk_from, b.chunk_to,
                        b.granularity, b.api_interval
                 FROM backfill_chunks b JOIN coins c USING (coin_key)
                 WHERE b.job_id = $1 AND b.state = 'pending' ORDER BY b.position LIMIT 1",
                &[typed(&job_id)],
            )
            .await
            .during("reading the next chunk of the backfill")?;
        row.map(|r| {
            let granularity: &str = r.get(6);
            let interval: Option<&str> = r.get(7);
            Ok(PendingChunk {
                position: r.get(0),
                coin_key: r.get(1),
                coin_id: r.get(2),
                vs_currency: r.get(3),
                chunk: Chunk {
                    from: r.get(4),
                    to: r.get(5),
                    granularity: parse_granularity(granularity)?,
                    // The plan only ever asks for daily.
                    interval: interval.map(|_| "daily"),
                },
            })
        })
        .transpose()
    }

    /// Ends a coin's backfill: its pending chunks in every currency become `refused`, with why.
    /// Returns how many.
    pub async fn refuse_coin(
        &self,
        job_id: Uuid,
        chunk: &PendingChunk,
        calls: i32,
        detail: &str,
    ) -> Result<u64, StoreError> {
        self.add_calls(job_id, chunk.position, calls).await?;
        self.client
            .execute_typed(
                "UPDATE backfill_chunks SET state = 'refused', detail = $3, done_at = now()
                 WHERE job_id = $1 AND coin_key = $2 AND state = 'pending'",
                &[typed(&job_id), typed(&chunk.coin_key), typed(&detail)],
            )
            .await
            .during("recording the coin's refusal")
    }

    /// Counts requests spent on a chunk that is not done (they count against the monthly budget).
    pub async fn add_calls(
        &self,
        job_id: Uuid,
        position: i32,
        calls: i32,
    ) -> Result<(), StoreError> {
        self.client
            .execute_typed(
                "UPDATE backfill_chunks SET calls = calls + $3, last_call_at = now()
                 WHERE job_id = $1 AND position = $2",
                &[typed(&job_id), typed(&position), typed(&calls)],
            )
            .await
            .during("counting the backfill's calls")?;
        Ok(())
    }

    /// Marks the job finished when no chunk is pending; returns whether it is.
    pub async fn finish_backfill_if_done(&self, job_id: Uuid) -> Result<bool, StoreError> {
        let finished = self
            .client
            .execute_typed(
                "UPDATE backfill_jobs SET finished_at = now(), leased_by = NULL, leased_until = NULL
                 WHERE job_id = $1 AND finished_at IS NULL AND NOT EXISTS
                     (SELECT 1 FROM backfill_chunks WHERE job_id = $1 AND state = 'pending')", &[typed(&job_id)])
            .await
            .during("finishing the backfill")?;
        Ok(finished == 1)
    }

    /// Gives the lease back, so that the next invocation need not wait for it to run out.
    pub async fn release_backfill(&self, job_id: Uuid, invocation: Uuid) -> Result<(), StoreError> {
        self.client
            .execute_typed(
                "UPDATE backfill_jobs SET leased_by = NULL, leased_until = NULL
                 WHERE job_id = $1 AND leased_by = $2",
                &[typed(&job_id), typed(&invocation)],
            )
            .await
            .during("releasing the backfill")?;
        Ok(())
    }

    /// Requests to CoinGecko this calendar month (UTC): the live runs' (a failed run's too) and
    /// the backfills'.
    pub async fn calls_this_month(&self) -> Result<u64, StoreError> {
        let row = self
            .client
            .query_typed_one(
                "SELECT coalesce((SELECT sum(coalesce(calls, (summary->>'calls')::bigint)) FROM ingest_runs
                                  WHERE kind = 'live' AND started_at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'), 0)
                      + coalesce((SELECT sum(calls) FROM backfill_chunks
                                  WHERE last_call_at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'), 0)", &[])
            .await
            .during("counting this month's calls")?;
        Ok(row.get::<_, Decimal>(0).try_into().unwrap_or(u64::MAX))
    }

    /// What the backfills cover of `coins` in `currencies` over `window`, pair by pair (read
    /// only: an id never seen is not covered, in every currency).
    pub async fn backfill_coverage(
        &self,
        coins: &BackfillCoins,
        currencies: &[String],
        window: &BackfillWindow,
    ) -> Result<Coverage, StoreError> {
        const READING: &str = "reading what the backfills cover";
        let keys = coin_keys(&self.client, coins).await.during(READING)?;
        let known = coverage(&self.client, &keys, currencies, window)
            .await
            .during(READING)?
            .into_iter()
            .map(|p| p.coverage);
        let pairs = match coins {
            // In the order asked, each id in every currency, the ones never seen among them.
            BackfillCoins::Ids(ids) => {
                let mut states: HashMap<(String, String), CoverageState> = known
                    .map(|p| ((p.coin_id, p.vs_currency), p.state))
                    .collect();
                ids.iter()
                    .flat_map(|id| currencies.iter().map(move |vs| (id, vs)))
                    .map(|(id, vs)| {
                        let key = (id.clone(), vs.clone());
                        let state = states.remove(&key).unwrap_or(CoverageState::NotCovered);
                        PairCoverage {
                            coin_id: key.0,
                            vs_currency: key.1,
                            state,
                        }
                    })
                    .collect()
            }
            BackfillCoins::Tracked { .. } => known.collect(),
        };
        Ok(Coverage {
            from: window.from,
            granularity: window.granularity.as_str().to_string(),
            pairs,
        })
    }

    /// The newest backfill's progress, if there has been one.
    pub async fn backfill_progress(&self) -> Result<Option<BackfillProgress>, StoreError> {
        let row = self
            .client
            .query_typed_opt(
                "SELECT j.job_id, j.window_from, j.window_to, j.granularity, j.finished_at,
                        count(DISTINCT b.coin_key),
                        count(DISTINCT b.coin_key) - count(DISTINCT b.coin_key) FILTER (WHERE b.state = 'pending'),
                        count(*) FILTER (WHERE b.state = 'done'),
                        count(*) FILTER (WHERE b.state = 'refused'),
                        count(*) FILTER (WHERE b.state = 'pending'),
                        coalesce(sum(b.calls), 0)::bigint,
                        coalesce(sum(b.recorded), 0)::bigint
                 FROM backfill_jobs j JOIN backfill_chunks b USING (job_id)
                 WHERE j.job_id = (SELECT job_id FROM backfill_jobs ORDER BY created_at DESC LIMIT 1)
                 GROUP BY j.job_id", &[])
            .await
            .during("reading the backfill's progress")?;
        Ok(row.map(|r| BackfillProgress {
            job_id: r.get(0),
            window_from: r.get(1),
            window_to: r.get(2),
            granularity: r.get(3),
            finished_at: r.get(4),
            coins: r.get::<_, i64>(5) as u64,
            coins_done: r.get::<_, i64>(6) as u64,
            chunks_done: r.get::<_, i64>(7) as u64,
            chunks_refused: r.get::<_, i64>(8) as u64,
            chunks_left: r.get::<_, i64>(9) as u64,
            calls: r.get::<_, i64>(10) as u64,
            history_inserted: r.get::<_, i64>(11) as u64,
        }))
    }
}

impl Apply<'_> {
    /// Whether `invocation` still holds the job's lease and the chunk is still to do: a slower
    /// invocation whose lease ran out must not write a chunk that another has taken over.
    pub async fn chunk_is_ours(
        &self,
        job_id: Uuid,
        position: i32,
        invocation: Uuid,
    ) -> Result<bool, StoreError> {
        let row = self.bounded("checking the backfill's lease", self.tx.query_typed_opt(
                "SELECT 1 FROM backfill_jobs j JOIN backfill_chunks b USING (job_id)
                 WHERE j.job_id = $1 AND j.leased_by = $3 AND b.position = $2 AND b.state = 'pending'", &[typed(&job_id), typed(&position), typed(&invocation)])).await?;
        Ok(row.is_some())
    }

    /// What the coin's history in `vs_currency` holds around `[from, to)`.
    pub async fn series_around(
        &self,
        coin_key: i32,
        vs_currency: &str,
        (from, to): (DateTime<Utc>, DateTime<Utc>),
    ) -> Result<SeriesAround, StoreError> {
        let row = self.bounded("reading the coin's history around the chunk", self.tx.query_typed_one(
                "WITH held AS (
                     SELECT source_updated_at AS at, price FROM price_points
                     WHERE coin_key = $1 AND vs_currency = $2 AND source_updated_at >= $3 AND source_updated_at < $4
                 )
                 SELECT (SELECT price FROM price_points
                         WHERE coin_key = $1 AND vs_currency = $2 AND source_updated_at < $3
                         ORDER BY source_updated_at DESC LIMIT 1),
                        (SELECT min(source_updated_at) FROM price_points
                         WHERE coin_key = $1 AND vs_currency = $2 AND granularity IS NULL),
                        (SELECT coalesce(array_agg(at ORDER BY at), '{}') FROM held),
                        (SELECT coalesce(array_agg(price ORDER BY at), '{}') FROM held)",
                &[typed(&coin_key), typed(&vs_currency), typed(&from), typed(&to)])).await?;
        let times: Vec<DateTime<Utc>> = row.get(2);
        let prices: Vec<Decimal> = row.get(3);
        Ok(SeriesAround {
            reference: row.get(0),
            first_live: row.get(1),
            held: times.into_iter().zip(prices).collect(),
        })
    }

    /// Notes on a chunk the points it left out for retention: its span counts as covered all the
    /// same (a retired week takes no row), and an owner who lifts a horizon finds the chunks to
    /// ask again by it (docs/command-line.md, backfill).
    pub async fn note_outside_retention(
        &self,
        job_id: Uuid,
        position: i32,
        outside: u64,
    ) -> Result<(), StoreError> {
        let detail = format!("{outside} points outside retention, left out");
        self.bounded(
            "noting the chunk's points outside retention",
            self.tx.execute_typed(
                "UPDATE backfill_chunks SET detail = $3 WHERE job_id = $1 AND position = $2",
                &[typed(&job_id), typed(&position), typed(&detail)],
            ),
        )
        .await?;
        Ok(())
    }

    /// Appends the recorded points of a chunk, marked with their granularity, puts those written
    /// on the feed, each with the price it moved from, and marks the chunk done from where it was
    /// asked (`chunk`'s start: later than planned when the Demo plan's limit cut it, so that it
    /// covers only what was asked for); returns the rows written.
    pub async fn write_chunk(
        &self,
        run_id: Uuid,
        job_id: Uuid,
        chunk: &PendingChunk,
        points: &[(&ChartPoint, Option<Decimal>)],
        fetched: i32,
        calls: i32,
    ) -> Result<u64, StoreError> {
        let times: Vec<DateTime<Utc>> = points.iter().map(|(p, _)| p.at).collect();
        if !times.is_empty() {
            self.bounded(
                "making the partitions of price_history",
                self.tx.execute_typed(
                    "SELECT price_history_make_partitions($1::timestamptz[])",
                    &[typed(&times)],
                ),
            )
            .await?;
        }
        let prices: Vec<Decimal> = points.iter().map(|(p, _)| p.price).collect();
        let caps: Vec<Option<Decimal>> = points.iter().map(|(p, _)| p.market_cap).collect();
        let volumes: Vec<Option<Decimal>> = points.iter().map(|(p, _)| p.total_volume).collect();
        let previous: Vec<Option<Decimal>> = points.iter().map(|(_, prev)| *prev).collect();
        let row = self
            .bounded(
                "writing the backfilled history",
                self.tx.query_typed_one(
                    WRITE_CHUNK,
                    &[
                        typed(&run_id),
                        typed(&chunk.coin_key),
                        typed(&chunk.vs_currency),
                        typed(&chunk.chunk.granularity.as_str()),
                        typed(&times),
                        typed(&prices),
                        typed(&caps),
                        typed(&volumes),
                        typed(&previous),
                    ],
                ),
            )
            .await?;
        let written = row.get::<_, i64>(0) as u64;
        self.took_positions(run_id, written, row.get(1));
        self.bounded("marking the chunk done", self.tx.execute_typed(
                "UPDATE backfill_chunks
                 SET state = 'done', points = $3, recorded = $4, calls = calls + $5, last_call_at = now(),
                     done_at = now(), run_id = $6, chunk_from = greatest(chunk_from, $7)
                 WHERE job_id = $1 AND position = $2", &[typed(&job_id), typed(&chunk.position), typed(&fetched), typed(&(written as i32)), typed(&calls), typed(&run_id), typed(&chunk.chunk.from)])).await?;
        Ok(written)
    }
}

/// A chunk's points as history rows (a time already held adds nothing), and those written at the
/// feed's next positions, oldest first, each with the price it moved from.
const WRITE_CHUNK: &str = "
WITH offered AS (
    SELECT * FROM unnest($5::timestamptz[], $6::numeric[], $7::numeric[], $8::numeric[], $9::numeric[])
        AS x(at, price, market_cap, total_volume, previous)
), history AS (
    INSERT INTO price_points (source_updated_at, recorded_at, run_id, coin_key, vs_currency,
                              price, market_cap, total_volume, granularity)
    SELECT o.at, now(), $1, $2, $3, o.price, o.market_cap, o.total_volume, $4 FROM offered o
    ON CONFLICT (coin_key, vs_currency, source_updated_at) DO NOTHING
    RETURNING source_updated_at, price
), feed AS (
    SELECT price_feed_append($1, now(), $3, $4,
               array_agg($2::int ORDER BY h.source_updated_at),
               array_agg(h.source_updated_at ORDER BY h.source_updated_at),
               array_agg(h.price ORDER BY h.source_updated_at),
               array_agg(o.previous ORDER BY h.source_updated_at)) AS last_seq
    FROM history h JOIN offered o ON o.at = h.source_updated_at
)
SELECT (SELECT count(*) FROM history), (SELECT last_seq FROM feed)";

/// Each (coin, currency) asked for and whether earlier backfills cover it over the window
/// (`$3` to `$4`, at a granularity whose rows are served by those of `$5`): `covered` when the
/// done chunks of its backfills at those granularities, each cut to its own job's window (what it
/// may write) from where it was asked, hold every instant from `$3` up to its first live
/// row or `$4`, whichever is first. A window ending now (`$6`) may end after them when no step
/// (`$7` seconds: an hour, a day, from midnight UTC) began in between: that step's point is still
/// to come. Else `pending` (in the open backfill), `refused` (CoinGecko refused it in a backfill),
/// or `not_covered`. In the order asked: coin by coin, each currency.
const COVERAGE: &str = "
WITH pairs AS (
    SELECT k.coin_key, k.n AS coin_order, c.vs_currency, c.n AS currency_order
    FROM unnest($1::int[]) WITH ORDINALITY AS k(coin_key, n)
    CROSS JOIN unnest($2::text[]) WITH ORDINALITY AS c(vs_currency, n)
), chunks AS (
    SELECT b.coin_key, b.vs_currency,
           range_agg(tstzrange(greatest(b.chunk_from, j.window_from), least(b.chunk_to, j.window_to)))
               FILTER (WHERE b.state = 'done' AND b.granularity = ANY($5::text[])
                       AND greatest(b.chunk_from, j.window_from) < least(b.chunk_to, j.window_to)) AS covered,
           bool_or(b.state = 'pending') AS pending,
           bool_or(b.state = 'refused') AS refused
    FROM backfill_chunks b JOIN backfill_jobs j USING (job_id)
    WHERE b.coin_key = ANY($1::int[]) AND b.vs_currency = ANY($2::text[])
    GROUP BY b.coin_key, b.vs_currency
), wanted AS (
    SELECT p.*, ch.covered, ch.pending, ch.refused,
           least($4::timestamptz,
                 (SELECT min(pp.source_updated_at) FROM price_points pp
                  WHERE pp.coin_key = p.coin_key AND pp.vs_currency = p.vs_currency AND pp.granularity IS NULL),
                 CASE WHEN $6::bool AND upper(ch.covered) > $3::timestamptz
                           AND upper(ch.covered) >= date_bin(make_interval(secs => $7::bigint), $4::timestamptz,
                                                             timestamptz '1970-01-01 00:00+00')
                      THEN upper(ch.covered) END) AS fill_to
    FROM pairs p LEFT JOIN chunks ch USING (coin_key, vs_currency)
)
SELECT w.coin_key, c.coin_id, w.vs_currency,
       CASE WHEN w.fill_to <= $3::timestamptz OR w.covered @> tstzrange($3::timestamptz, w.fill_to) THEN 'covered'
            WHEN w.pending THEN 'pending'
            WHEN w.refused THEN 'refused'
            ELSE 'not_covered' END,
       w.fill_to,
       coalesce((SELECT array_agg(lower(r) ORDER BY r) FROM unnest(w.covered) AS r), '{}'),
       coalesce((SELECT array_agg(upper(r) ORDER BY r) FROM unnest(w.covered) AS r), '{}')
FROM wanted w JOIN coins c USING (coin_key)
ORDER BY w.coin_order, w.currency_order";

/// A pair's coverage, and what of a window it still lacks.
struct PairSpans {
    coin_key: i32,
    coverage: PairCoverage,
    /// Covered up to here: its first live row, the window's end, or within a step of it.
    fill_to: DateTime<Utc>,
    /// The spans done chunks cover, merged, in time order.
    covered: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

impl PairSpans {
    /// Whether `chunk` would fill anything: some of its span in `window`, before `fill_to`, that
    /// no done chunk covers. A wider window after a narrower one needs no call for chunks the
    /// narrower one holds.
    fn needs(&self, chunk: &Chunk, window: &BackfillWindow) -> bool {
        let from = chunk.from.max(window.from);
        let to = chunk.to.min(window.to).min(self.fill_to);
        from < to
            && !self
                .covered
                .iter()
                .any(|&(start, end)| start <= from && to <= end)
    }
}

async fn coverage(
    client: &impl GenericClient,
    coins: &[i32],
    currencies: &[String],
    window: &BackfillWindow,
) -> Result<Vec<PairSpans>, tokio_postgres::Error> {
    let rows = client
        .query_typed(
            COVERAGE,
            &[
                typed(&coins),
                typed(&currencies),
                typed(&window.from),
                typed(&window.to),
                typed(&window.granularity.served_by()),
                typed(&window.ends_now),
                typed(&window.granularity.step().num_seconds()),
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| PairSpans {
            coin_key: r.get(0),
            coverage: PairCoverage {
                coin_id: r.get(1),
                vs_currency: r.get(2),
                state: match r.get::<_, &str>(3) {
                    "covered" => CoverageState::Covered,
                    "pending" => CoverageState::Pending,
                    "refused" => CoverageState::Refused,
                    _ => CoverageState::NotCovered,
                },
            },
            fill_to: r.get(4),
            covered: r
                .get::<_, Vec<DateTime<Utc>>>(5)
                .into_iter()
                .zip(r.get::<_, Vec<DateTime<Utc>>>(6))
                .collect(),
        })
        .collect())
}

/// The keys of a backfill's coins, in order; an id never seen has none (the claim adds it first).
async fn coin_keys(
    client: &impl GenericClient,
    coins: &BackfillCoins,
) -> Result<Vec<i32>, tokio_postgres::Error> {
    let rows = match coins {
        BackfillCoins::Ids(ids) => {
            client
                .query_typed(
                    "SELECT c.coin_key FROM unnest($1::text[]) WITH ORDINALITY AS i(id, n)
                     JOIN coins c ON c.coin_id = i.id ORDER BY i.n",
                    &[typed(ids)],
                )
                .await?
        }
        BackfillCoins::Tracked { vs_currency, limit } => {
            client
                .query_typed(
                    "SELECT q.coin_key FROM quotes q JOIN coins c USING (coin_key)
                     WHERE q.vs_currency = $1 AND c.tracked
                     ORDER BY q.market_cap_rank NULLS LAST, q.coin_key LIMIT $2",
                    &[typed(vs_currency), typed(limit)],
                )
                .await?
        }
    };
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn lease(
    tx: &tokio_postgres::Transaction<'_>,
    job_id: Uuid,
    invocation: Uuid,
    until: DateTime<Utc>,
) -> Result<(), StoreError> {
    tx.execute_typed(
        "UPDATE backfill_jobs SET leased_by = $2, leased_until = $3 WHERE job_id = $1",
        &[typed(&job_id), typed(&invocation), typed(&until)],
    )
    .await
    .during("leasing the backfill")?;
    Ok(())
}

fn job_from(row: &tokio_postgres::Row) -> Result<BackfillJob, StoreError> {
    Ok(BackfillJob {
        job_id: row.get(0),
        window_from: row.get(1),
        window_to: row.get(2),
        granularity: parse_granularity(row.get(3))?,
    })
}

fn parse_granularity(text: &str) -> Result<Granularity, StoreError> {
    text.parse()
        .map_err(|e: crate::backfill::UnknownGranularity| StoreError {
            action: "reading a backfill",
            detail: e.to_string(),
            sqlstate: None,
        })
}
