//! A TCP proxy in front of the local PostgreSQL that records every message a client sends, as
//! RDS Proxy sees them: simple queries, and the Parse messages of the extended protocol with their
//! statement names.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One message from a client that carries SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// `Q`: a simple query (one or more statements).
    Query(String),
    /// `P`: a statement parsed under a name (empty: the unnamed statement).
    Parse { name: String, sql: String },
}

impl Sent {
    pub fn sql(&self) -> &str {
        match self {
            Sent::Query(sql) | Sent::Parse { sql, .. } => sql,
        }
    }
}

/// What a proxy has recorded, every connection together, in the order sent.
#[derive(Clone, Default)]
pub struct Recording(Arc<Mutex<Vec<Sent>>>);

impl Recording {
    /// Everything recorded since the last call.
    pub fn take(&self) -> Vec<Sent> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

/// Listens on a free local port and relays to `upstream`, recording what clients send.
pub async fn recording_proxy(upstream: SocketAddr) -> (SocketAddr, Recording) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let recording = Recording::default();
    let sink = recording.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(upstream).await else {
                continue;
            };
            tokio::spawn(relay(client, server, sink.clone()));
        }
    });
    (address, recording)
}

async fn relay(client: TcpStream, server: TcpStream, recording: Recording) {
    let (mut from_client, mut to_server) = (client.into_split(), server.into_split());
    let (client_read, client_write) = (&mut from_client.0, &mut from_client.1);
    let (server_read, server_write) = (&mut to_server.0, &mut to_server.1);
    let upstream = async {
        let mut parser = FrontendParser::default();
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            parser.feed(&buffer[..n], &recording);
            if server_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let downstream = async {
        let _ = tokio::io::copy(server_read, client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}

/// Splits the client's byte stream into messages: the untyped startup (and SSL or GSS requests)
/// first, then typed messages.
#[derive(Default)]
struct FrontendParser {
    pending: Vec<u8>,
    started: bool,
}

/// The codes of the untyped requests a client may send before its startup message.
const SSL_REQUEST: u32 = 80_877_103;
const GSS_REQUEST: u32 = 80_877_104;

impl FrontendParser {
    fn feed(&mut self, bytes: &[u8], recording: &Recording) {
        self.pending.extend_from_slice(bytes);
        loop {
            let header = if self.started { 5 } else { 4 };
            if self.pending.len() < header {
                return;
            }
            let length_at = header - 4;
            let length = u32::from_be_bytes(self.pending[length_at..header].try_into().unwrap());
            let total = length_at + length as usize;
            if self.pending.len() < total {
                return;
            }
            let message: Vec<u8> = self.pending.drain(..total).collect();
            if !self.started {
                let code = u32::from_be_bytes(message[4..8].try_into().unwrap());
                self.started = code != SSL_REQUEST && code != GSS_REQUEST;
                continue;
            }
            let body = &message[5..];
            let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
            let mut strings = body.split(|&b| b == 0);
            let sent = match message[0] {
                b'Q' => Sent::Query(text(strings.next().unwrap_or_default())),
                b'P' => Sent::Parse {
                    name: text(strings.next().unwrap_or_default()),
                    sql: text(strings.next().unwrap_or_default()),
                },
                _ => continue,
            };
            recording.0.lock().unwrap().push(sent);
        }
    }
}

/// Why RDS Proxy would pin the session that sent `sent`, after AWS's list for PostgreSQL
/// ("Avoiding pinning an RDS Proxy"): `SET`; `PREPARE`, `EXECUTE`, `DEALLOCATE` and named
/// prepared statements; temporary tables, sequences and views; cursors; `DISCARD`; `LISTEN`;
/// `LOAD`; `nextval` and `setval`; session-level advisory locks (the transaction-level ones do not
/// pin); setting a parameter (`set_config`); and, for every engine, statements over 16 KB.
pub fn pinning(sent: &Sent) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Sent::Parse { name, .. } = sent {
        if !name.is_empty() {
            reasons.push(format!("a named prepared statement ({name})"));
        }
    }
    let sql = sent.sql();
    if sql.len() > 16 * 1024 {
        reasons.push(format!("a statement of {} bytes (over 16 KB)", sql.len()));
    }
    let lower = sql.to_lowercase();
    let calls = [
        "set_config(",
        "pg_advisory_lock(",
        "pg_advisory_lock_shared(",
        "pg_try_advisory_lock(",
        "pg_try_advisory_lock_shared(",
        "pg_advisory_unlock",
        "nextval(",
        "setval(",
        "currval(",
    ];
    for call in calls.iter().filter(|call| lower.contains(*call)) {
        reasons.push(format!("calls {call}…)"));
    }
    for statement in statements(&lower) {
        let words: Vec<&str> = statement.split_whitespace().take(4).collect();
        let pins = match words.as_slice() {
            ["set" | "reset" | "prepare" | "execute" | "deallocate" | "discard" | "declare"
            | "listen" | "load", ..] => true,
            ["create", "temp" | "temporary", ..] => true,
            ["create", "or", "replace", "temp" | "temporary"] => true,
            ["create", _, object, ..] if object.starts_with("pg_temp.") => true,
            _ => false,
        };
        if pins {
            reasons.push(format!("{}…", words.join(" ")));
        }
    }
    reasons
}

/// The statements of a simple query, comments and the bodies of functions (`$$ … $$`) left out:
/// a naive split on `;`, enough to find the first words of statements.
fn statements(sql: &str) -> Vec<String> {
    let code: String = sql
        .lines()
        .map(|line| line.split("--").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let outside_bodies: String = code.split("$$").step_by(2).collect();
    outside_bodies
        .split(';')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}
