//! `changes`: the change feed as JSON lines from a position on, and with `--follow` as runs
//! commit.

use std::io::{self, BufWriter, ErrorKind, Write};

use clap::Args;

use crate::store::Store;

/// Changes read per round trip: bounds the memory of a catch-up however far behind it is.
const BATCH: u64 = 1_000;

#[derive(Args)]
pub struct ChangesArgs {
    /// Print the changes after this position (0: from the first). Store the last `seq` you
    /// processed and pass it here to resume exactly after it.
    #[arg(long, value_name = "SEQ", value_parser = clap::value_parser!(i64).range(0..))]
    since: i64,
    /// Stop after this many changes. Default: every change after --since.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// Once caught up, keep polling and print new changes as runs commit, until stopped (or
    /// --limit).
    #[arg(long)]
    follow: bool,
    /// How often --follow polls once caught up (e.g. 500ms, 2s, 1m).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "2s",
        requires = "follow"
    )]
    interval: humantime::Duration,
}

/// Prints the changes `args` asks for, one JSON line each, in position order. A reader that
/// went away (`| head`) ends it quietly.
pub async fn print_changes(store: &Store, args: ChangesArgs) -> anyhow::Result<()> {
    let mut after = args.since;
    let mut left = args.limit.unwrap_or(u64::MAX);
    while left > 0 {
        let asked = BATCH.min(left);
        let batch = store.changes_after(after, asked as u32).await?;
        let Some(last) = batch.last() else {
            if !args.follow {
                return Ok(());
            }
            tokio::time::sleep(args.interval.into()).await;
            continue;
        };
        after = last.seq;
        left -= batch.len() as u64;
        let mut out = BufWriter::new(io::stdout().lock());
        let written = batch
            .iter()
            .try_for_each(|change| {
                serde_json::to_writer(&mut out, change)?;
                out.write_all(b"\n")
            })
            .and_then(|()| out.flush());
        match written {
            Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(()),
            result => result?,
        }
        if (batch.len() as u64) < asked && !args.follow {
            return Ok(());
        }
    }
    Ok(())
}
