//! The change feed, for `benches/apply.rs` (`FEED=1`): at the largest size, the apply against the
//! same apply with the feed's writes turned off, publishing a run's events, and (`FEED_ROWS`) the
//! feed's bytes per row and reading 1,000 changes after a position at that many rows.

use coingecko_cdc::eventbridge::EventBus;
use coingecko_cdc::publish::Events;

use super::*;

/// The feed's writes turned off: `price_feed_append` does nothing, the rest of the apply (the
/// statement, its `RETURNING`, the array of references) is as it is.
const FEED_OFF: &str =
    "CREATE OR REPLACE FUNCTION price_feed_append(run uuid, recorded timestamptz,
        currency text, granularity text, keys integer[], times timestamptz[], prices numeric[],
        previous numeric[]) RETURNS bigint LANGUAGE sql AS 'SELECT NULL::bigint'";

impl Bench {
    pub async fn feed(&self, coins: usize, feed_rows: i64) -> Result<()> {
        let (server, wire) = (&self.server, self.server.wire.as_ref());
        let env = settings(&self.stub, coins);
        let config = Config::from_lookup(|name| env.get(name).cloned())?;
        let template = server.create(None).await?;
        let template_url = server.url(&template, false);
        connect_store(&template_url).await?.migrate().await?;
        common::serve_on(&self.stub, &answer(&self.recorded, coins, 1)?).await;
        run_cli(&["run"], &template_url, &env).await?;
        common::connect(&template_url)
            .await
            .batch_execute("VACUUM ANALYZE")
            .await?;
        common::serve_on(&self.stub, &answer(&self.recorded, coins, 2)?).await;
        let ingest = Ingest::new(config.coingecko.clone(), config.ingest.clone())?;

        // Side by side, each first every other sample.
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for sample in 0..self.samples {
            for feed_on in [sample % 2 == 0, sample % 2 == 1] {
                let db = server.create(Some(&template)).await?;
                let url = server.url(&db, false);
                if !feed_on {
                    common::connect(&url).await.batch_execute(FEED_OFF).await?;
                }
                let run = real_run(&ingest, &url, wire).await?;
                if feed_on { &mut on } else { &mut off }.push(run);
                server.drop_database(&db).await?;
            }
        }
        let moved = on[0].summary.history_inserted;
        let (with, without) = (
            median(on.iter().map(Ours::apply)),
            median(off.iter().map(Ours::apply)),
        );
        println!(
            "\n== the change feed: {coins} coins, run 2 ({moved} changes); medians of {} ==",
            self.samples
        );
        println!(
            "apply_ms: feed on {}, feed off {}: on/off {:.3}",
            ms(with),
            ms(without),
            with.as_secs_f64() / without.as_secs_f64()
        );

        for latency in [Duration::ZERO, Duration::from_millis(20)] {
            let (calls, took, published) = self.publish_run(&template, &ingest, latency).await?;
            println!(
                "publishing run 2's {published} events, PutEvents answering after {} ms: {calls} calls, {}",
                latency.as_millis(),
                ms(took)
            );
        }
        server.drop_database(&template).await?;
        if feed_rows > 0 {
            self.read_feed(feed_rows).await?;
        }
        Ok(())
    }

    /// Run 2 on a copy of `template`, its events then published (`Events::publish`, as a live run
    /// does after its commit) to a PutEvents stub; returns the calls, the time and the events.
    async fn publish_run(
        &self,
        template: &str,
        ingest: &Ingest,
        latency: Duration,
    ) -> Result<(usize, Duration, u64)> {
        let db = self.server.create(Some(template)).await?;
        let url = self.server.url(&db, false);
        // The outbox starts at run 2, as a first run with EVENT_BUS_NAME set starts it.
        common::connect(&url)
            .await
            .batch_execute("UPDATE price_feed_published SET last_seq = (SELECT last_seq FROM price_feed_counter)")
            .await?;
        let run = real_run(ingest, &url, self.server.wire.as_ref()).await?;
        let stub = common::put_events::put_events_endpoint(latency).await;
        let aws = common::moto::aws_config_for(&stub.uri()).await;
        let events = Events {
            bus: EventBus::new(&aws, "bench"),
            include_backfill: false,
        };
        let store = connect_store(&url).await?;
        let started = Instant::now();
        let summary = events.publish(&store, run.summary, None).await;
        let took = started.elapsed();
        ensure!(
            summary.events_error.is_none() && summary.events_backlog == Some(0),
            "publishing failed: {:?}",
            summary.events_error
        );
        drop(store);
        self.server.drop_database(&db).await?;
        Ok((
            stub.received_requests().await.unwrap_or_default().len(),
            took,
            summary.events_published.unwrap_or_default(),
        ))
    }

    /// The feed at `rows` positions (6,000 coins), then 1,000 changes read after a position in
    /// the middle and near the end, `Store::changes_after` as `changes` and the publisher read.
    async fn read_feed(&self, rows: i64) -> Result<()> {
        let db = self.server.create(None).await?;
        let url = self.server.url(&db, false);
        let mut store = connect_store(&url).await?;
        store.migrate().await?;
        let client = common::connect(&url).await;
        let loading = Instant::now();
        client
            .batch_execute(&format!(
                "INSERT INTO coins (coin_id, symbol, first_seen_at, last_seen_at)
                     SELECT 'coin-' || i, 'c' || i, now(), now() FROM generate_series(1, 6000) i;
                 ALTER TABLE price_feed DROP CONSTRAINT price_feed_pkey;
                 INSERT INTO price_feed (seq, source_updated_at, recorded_at, run_id, coin_key,
                                         vs_currency, price, previous_price, granularity)
                     SELECT g, t, t, '01a25303-865c-7258-bb19-bc6f14f564eb', 1 + g % 6000,
                            (ARRAY['usd', 'eur', 'btc'])[1 + g % 3],
                            round((60000 + g % 7919)::numeric / 7, 12),
                            round((60000 + (g + 1) % 7919)::numeric / 7, 12),
                            CASE WHEN g % 20 = 0 THEN 'daily' END
                     FROM generate_series(1, {rows}) g,
                          LATERAL (SELECT timestamptz '2016-12-01' + g * interval '6 seconds' AS t) times;
                 ALTER TABLE price_feed ADD PRIMARY KEY (seq);"
            ))
            .await?;
        client.batch_execute("VACUUM ANALYZE price_feed").await?;
        let sizes = client
            .query_one(
                "SELECT pg_relation_size('price_feed'), pg_indexes_size('price_feed')",
                &[],
            )
            .await?;
        let (heap, index): (i64, i64) = (sizes.get(0), sizes.get(1));
        println!(
            "\n== the feed at {rows} rows (loaded in {}) ==\nbytes per row: heap {:.1}, index {:.1}",
            ms(loading.elapsed()),
            heap as f64 / rows as f64,
            index as f64 / rows as f64
        );
        for (label, after) in [("middle", rows / 2), ("near the end", rows - 1_000)] {
            let mut times = Vec::new();
            for _ in 0..QUERY_SAMPLES {
                let started = Instant::now();
                let changes = store.changes_after(after, 1_000).await?;
                times.push(started.elapsed());
                ensure!(changes.len() == 1_000 && changes[0].seq == after + 1);
            }
            println!(
                "1,000 changes after a position in the {label}: median {:.2} ms of {QUERY_SAMPLES}",
                median(times.into_iter()).as_secs_f64() * 1e3
            );
        }
        drop((store, client));
        self.server.drop_database(&db).await?;
        Ok(())
    }
}
