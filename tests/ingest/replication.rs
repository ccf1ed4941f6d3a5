//! Logical replication: a slot on the publication `coingecko_cdc`, read with `pgoutput` (what
//! Debezium and every pgoutput consumer use), returns exactly the rows each run committed, as one
//! transaction a run, in commit order, ended by the run's message; a failed run returns nothing.
//! A throw-away cluster with `wal_level = logical`.

use std::collections::HashMap;

use common::secure_postgres::{SecurePostgres, SUPERUSER_PASSWORD};
use tokio_postgres::Client;
use wiremock::MockServer;

use super::*;

/// One decoded transaction: its rows by table (the names pgoutput gives), each row's columns as
/// text, and the logical decoding messages, in the order sent.
#[derive(Debug, Default)]
struct Transaction {
    inserts: HashMap<String, Vec<Vec<Option<String>>>>,
    /// Tables with an UPDATE in it.
    updated: Vec<String>,
    /// (prefix, content) of each message, and whether it came last before the commit.
    messages: Vec<(String, String)>,
    last_was_message: bool,
}

/// Reads pgoutput's protocol (protocol version 1): each row of
/// `pg_logical_slot_get_binary_changes` is one message.
struct Decoder {
    relations: HashMap<u32, (String, Vec<String>)>,
    transactions: Vec<Transaction>,
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().unwrap();
        self.0 = rest;
        *first
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        taken
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    fn cstring(&mut self) -> String {
        let end = self.0.iter().position(|b| *b == 0).unwrap();
        let text = String::from_utf8(self.0[..end].to_vec()).unwrap();
        self.0 = &self.0[end + 1..];
        text
    }
    fn tuple(&mut self) -> Vec<Option<String>> {
        (0..self.u16())
            .map(|_| match self.u8() {
                b't' => {
                    let length = self.u32() as usize;
                    Some(String::from_utf8(self.take(length).to_vec()).unwrap())
                }
                b'n' | b'u' => None,
                kind => panic!("unexpected column kind {}", kind as char),
            })
            .collect()
    }
}

impl Decoder {
    fn current(&mut self) -> &mut Transaction {
        self.transactions
            .last_mut()
            .expect("a change outside a transaction")
    }

    fn message(&mut self, message: &[u8]) {
        let mut bytes = Bytes(message);
        let kind = bytes.u8();
        if kind != b'M' && kind != b'C' && kind != b'B' {
            if let Some(t) = self.transactions.last_mut() {
                t.last_was_message = false;
            }
        }
        match kind {
            b'B' => self.transactions.push(Transaction::default()),
            b'C' => {}
            b'R' => {
                let id = bytes.u32();
                let _namespace = bytes.cstring();
                let name = bytes.cstring();
                let _replica_identity = bytes.u8();
                let columns = (0..bytes.u16())
                    .map(|_| {
                        let _flags = bytes.u8();
                        let name = bytes.cstring();
                        let _type = bytes.u32();
                        let _modifier = bytes.u32();
                        name
                    })
                    .collect();
                self.relations.insert(id, (name, columns));
            }
            b'I' => {
                let (name, _) = self.relations[&bytes.u32()].clone();
                assert_eq!(bytes.u8(), b'N');
                let row = bytes.tuple();
                self.current().inserts.entry(name).or_default().push(row);
            }
            b'U' => {
                let (name, _) = self.relations[&bytes.u32()].clone();
                self.current().updated.push(name);
            }
            b'M' => {
                let _flags = bytes.u8();
                let _lsn = bytes.take(8);
                let prefix = bytes.cstring();
                let length = bytes.u32() as usize;
                let content = String::from_utf8(bytes.take(length).to_vec()).unwrap();
                let transaction = self.current();
                transaction.messages.push((prefix, content));
                transaction.last_was_message = true;
            }
            b'Y' | b'O' | b'D' | b'T' => {}
            other => panic!("unexpected pgoutput message {}", other as char),
        }
    }

    /// The index of column `name` of table `table`.
    fn column(&self, table: &str, name: &str) -> usize {
        self.relations
            .values()
            .find(|(t, _)| t == table)
            .and_then(|(_, columns)| columns.iter().position(|c| c == name))
            .unwrap_or_else(|| panic!("no column {name} of {table} in the stream"))
    }
}

async fn slot_changes(db: &Client) -> (Vec<Transaction>, Decoder) {
    let rows = db
        .query(
            "SELECT data FROM pg_logical_slot_get_binary_changes('feed_test', NULL, NULL,
                 'proto_version', '1', 'publication_names', 'coingecko_cdc', 'messages', 'true')",
            &[],
        )
        .await
        .unwrap();
    let messages: Vec<Vec<u8>> = rows.iter().map(|r| r.get(0)).collect();
    let mut decoder = Decoder {
        relations: HashMap::new(),
        transactions: Vec::new(),
    };
    for message in &messages {
        decoder.message(message);
    }
    let transactions = std::mem::take(&mut decoder.transactions);
    (transactions, decoder)
}

#[tokio::test]
async fn a_slot_on_the_publication_returns_each_runs_rows_as_one_transaction_in_commit_order() {
    let server = SecurePostgres::start_logical();
    server.create_owner("cdc_owner", "owner-password").await;
    let url = server.url("cdc_owner", "owner-password", "cdc_owner");
    let stub = MockServer::start().await;
    let env = |stub: &MockServer| {
        vec![
            ("DATABASE_URL".to_string(), url.clone()),
            ("COINGECKO_BASE_URL".to_string(), stub.uri()),
            ("CDC_THRESHOLD_PCT".to_string(), "1".to_string()),
        ]
    };
    let run = |stub: &MockServer| {
        let env = env(stub);
        async move {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            common::cli_alone(&["run"], &env).await
        }
    };
    let migrated = common::cli_alone(&["migrate"], &[("DATABASE_URL", url.as_str())]).await;
    assert!(migrated.status.success(), "{migrated:?}");
    let db = common::connect(&server.url("postgres", SUPERUSER_PASSWORD, "cdc_owner")).await;
    db.batch_execute("SELECT pg_create_logical_replication_slot('feed_test', 'pgoutput')")
        .await
        .unwrap();

    let answers = [
        vec![
            coin("bitcoin", "64000.5", "2026-12-07T10:00:00.000Z"),
            coin(
                "ethereum",
                "3000.123456789012345678",
                "2026-12-07T10:00:00.000Z",
            ),
        ],
        // bitcoin moves 2 %, ethereum less than the threshold, dogecoin is new.
        vec![
            coin("bitcoin", "65280.51", "2026-12-07T10:05:00.000Z"),
            coin("ethereum", "3001", "2026-12-07T10:05:00.000Z"),
            coin("dogecoin", "0.0000001234", "2026-12-07T10:05:00.000Z"),
        ],
    ];
    for answer in &answers {
        common::serve_on(&stub, &[page(answer)]).await;
        let output = run(&stub).await;
        assert!(output.status.success(), "{output:?}");
    }
    // A run that fails in its apply, after writing: nothing of it may reach the slot.
    db.batch_execute(
        "CREATE FUNCTION fail_apply() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'the disk is full'; END $$;
         CREATE TRIGGER fail_apply AFTER INSERT ON quotes
             FOR EACH STATEMENT EXECUTE FUNCTION fail_apply();",
    )
    .await
    .unwrap();
    common::serve_on(
        &stub,
        &[page(&[coin("cardano", "0.5", "2026-12-07T10:10:00.000Z")])],
    )
    .await;
    assert!(!run(&stub).await.status.success(), "the failing run fails");

    let (transactions, decoder) = slot_changes(&db).await;
    let with_history: Vec<&Transaction> = transactions
        .iter()
        .filter(|t| t.inserts.contains_key("price_feed"))
        .collect();
    assert_eq!(
        with_history.len(),
        2,
        "one transaction for each run that committed"
    );
    let seq = decoder.column("price_feed", "seq");
    let run_id = decoder.column("price_feed", "run_id");
    let feed_price = decoder.column("price_feed", "price");
    let history_price = decoder.column("price_points", "price");
    let mut expected_seq = 1;
    for (transaction, (run_rows, prices)) in with_history.iter().zip([
        (2, vec!["3000.123456789012345678", "64000.5"]),
        (2, vec!["0.0000001234", "65280.51"]),
    ]) {
        assert!(
            !transaction
                .inserts
                .keys()
                .any(|t| t.starts_with("price_points_")),
            "history comes as price_points, not its weeks: {:?}",
            transaction.inserts.keys()
        );
        let history = &transaction.inserts["price_points"];
        let feed = &transaction.inserts["price_feed"];
        assert_eq!((history.len(), feed.len()), (run_rows, run_rows));
        let mut history_prices: Vec<&str> = history
            .iter()
            .map(|r| r[history_price].as_deref().unwrap())
            .collect();
        history_prices.sort();
        assert_eq!(history_prices, prices, "the exact prices the run recorded");
        let mut feed_prices: Vec<&str> = feed
            .iter()
            .map(|r| r[feed_price].as_deref().unwrap())
            .collect();
        feed_prices.sort();
        assert_eq!(feed_prices, prices);
        let seqs: Vec<i64> = feed
            .iter()
            .map(|r| r[seq].as_ref().unwrap().parse().unwrap())
            .collect();
        let want: Vec<i64> = (expected_seq..expected_seq + run_rows as i64).collect();
        assert_eq!(seqs, want, "positions in commit order, without gaps");
        expected_seq += run_rows as i64;
        // The run's end, last before its commit, naming its positions.
        assert!(
            transaction.last_was_message,
            "the message ends the transaction"
        );
        let (prefix, content) = transaction.messages.last().unwrap();
        assert_eq!(prefix, "coingecko_cdc");
        let content: serde_json::Value = serde_json::from_str(content).unwrap();
        assert_eq!(content["run_id"], feed[0][run_id].as_deref().unwrap());
        assert_eq!(content["first_seq"], want[0]);
        assert_eq!(content["last_seq"], *want.last().unwrap());
        assert_eq!(content["changes"], run_rows);
    }
    let cardano = transactions.iter().any(|t| {
        t.inserts
            .values()
            .flatten()
            .flatten()
            .any(|value| value.as_deref() == Some("cardano"))
    });
    assert!(!cardano, "nothing of the failed run");
    assert!(
        with_history.iter().all(|t| !t
            .updated
            .iter()
            .any(|n| n == "price_points" || n == "price_feed")),
        "history and the feed are only ever appended to"
    );
    assert!(
        with_history[1].updated.iter().any(|n| n == "quotes"),
        "the latest prices follow in the same transaction"
    );
}
