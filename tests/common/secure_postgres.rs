//! A throw-away PostgreSQL server of the test's own, as RDS runs one: TLS with a
//! certificate from a CA the test makes, and password (SCRAM) authentication.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

pub const SUPERUSER_PASSWORD: &str = "superuser-test-password";

/// How a server does TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerTls {
    /// A certificate for `localhost` from the test's CA; connections with and without TLS admitted.
    TestCa,
    /// A self-signed certificate for `localhost`.
    SelfSigned,
    /// The test CA's certificate, and only connections with TLS admitted (`hostssl`).
    Required,
    /// TLS offered, but only connections without it admitted (`hostnossl`).
    Refused,
    /// No TLS (`ssl = off`).
    Off,
}

pub struct SecurePostgres {
    pub port: u16,
    /// The test's CA, as PEM: it signed the server's certificate (for `localhost` only) unless
    /// the server's is self-signed.
    pub ca_file: PathBuf,
    dir: PathBuf,
    bindir: PathBuf,
}

impl SecurePostgres {
    pub fn start() -> Self {
        Self::start_with(ServerTls::TestCa)
    }

    pub fn start_with(tls: ServerTls) -> Self {
        Self::start_configured(tls, "")
    }

    /// With logical decoding on (`wal_level = logical`), for replication slots, as RDS runs
    /// with `rds.logical_replication = 1`.
    pub fn start_logical() -> Self {
        Self::start_configured(ServerTls::TestCa, "wal_level = logical\n")
    }

    /// `extra_settings`: more lines of postgresql.conf.
    fn start_configured(tls: ServerTls, extra_settings: &str) -> Self {
        let bindir = postgres_bindir();
        let dir =
            std::env::temp_dir().join(format!("cdc-secure-pg-{}", uuid::Uuid::now_v7().simple()));
        let data = dir.join("data");
        std::fs::create_dir_all(&dir).unwrap();

        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "coingecko-cdc test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server_params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let server_cert = match tls {
            ServerTls::SelfSigned => server_params.self_signed(&server_key),
            _ => server_params.signed_by(&server_key, &ca),
        }
        .unwrap();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        std::fs::write(dir.join("server.crt"), server_cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
        std::fs::write(dir.join("pwfile"), SUPERUSER_PASSWORD).unwrap();
        as_server_owner(&["chown", "-R", "postgres:postgres", dir.to_str().unwrap()]);
        as_server_owner(&["chmod", "600", dir.join("server.key").to_str().unwrap()]);

        run_as_postgres(
            &bindir.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "--pwfile",
                dir.join("pwfile").to_str().unwrap(),
            ],
        );
        let port = free_port();
        let settings = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{dir}'\nssl = {ssl}\nssl_cert_file = '{dir}/server.crt'\nssl_key_file = '{dir}/server.key'\nfsync = off\n{extra_settings}",
            dir = dir.display(),
            ssl = if tls == ServerTls::Off { "off" } else { "on" },
        );
        append(&data.join("postgresql.conf"), &settings);
        let tcp_line = match tls {
            ServerTls::Required => Some("hostssl"),
            ServerTls::Refused => Some("hostnossl"),
            _ => None,
        };
        if let Some(kind) = tcp_line {
            std::fs::write(
                data.join("pg_hba.conf"),
                format!("local all all scram-sha-256\n{kind} all all 127.0.0.1/32 scram-sha-256\n"),
            )
            .unwrap();
        }
        run_as_postgres(
            &bindir.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                dir.join("log").to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        Self {
            port,
            ca_file,
            dir,
            bindir,
        }
    }

    /// Restarts the server (fast shutdown: sessions are ended), as a failover or a patch would.
    pub fn restart(&self) {
        run_as_postgres(
            &self.bindir.join("pg_ctl"),
            &[
                "-D",
                self.dir.join("data").to_str().unwrap(),
                "-l",
                self.dir.join("log").to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "restart",
            ],
        );
    }

    /// A URL for `user` on this server (TLS not forced: the caller's sslmode decides).
    pub fn url(&self, user: &str, password: &str, dbname: &str) -> String {
        format!(
            "postgres://{user}:{password}@localhost:{}/{dbname}",
            self.port
        )
    }

    /// A superuser connection, for setting up roles and rotating passwords; through the server's
    /// socket, which every kind of server admits.
    pub async fn admin(&self) -> tokio_postgres::Client {
        super::connect(&format!(
            "host={} port={} user=postgres password={SUPERUSER_PASSWORD} dbname=postgres",
            self.dir.display(),
            self.port
        ))
        .await
    }

    /// psql from this server's installation, with nothing of the machine's around it: no
    /// environment (so no PG* variables) and a home of its own (no ~/.postgresql, ~/.pgpass, ~/.psqlrc).
    pub fn psql(&self) -> Command {
        let mut psql = Command::new(self.bindir.join("psql"));
        psql.env_clear().env("HOME", &self.dir).args([
            "--no-psqlrc",
            "--no-password",
            "--tuples-only",
            "--no-align",
        ]);
        psql
    }

    /// A login role owning a database of the same name.
    pub async fn create_owner(&self, role: &str, password: &str) {
        let admin = self.admin().await;
        admin
            .batch_execute(&format!("CREATE ROLE {role} LOGIN"))
            .await
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {role} OWNER {role}"))
            .await
            .unwrap();
        self.set_password(role, password).await;
    }

    pub async fn set_password(&self, role: &str, password: &str) {
        let admin = self.admin().await;
        // ALTER ROLE takes no parameters: let the server quote the values.
        let statement: String = admin
            .query_one(
                "SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)",
                &[&role, &password],
            )
            .await
            .unwrap()
            .get(0);
        admin.batch_execute(&statement).await.unwrap();
    }

    /// Ends every session of `role`, as an idle timeout or a failover would.
    pub async fn disconnect(&self, role: &str) {
        self.admin()
            .await
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                &[&role],
            )
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    /// A "credentials for RDS" secret for `role` on this server.
    pub fn secret(&self, role: &str, password: &str) -> String {
        format!(
            r#"{{"engine":"postgres","host":"localhost","port":{},"dbname":"{role}","username":"{role}","password":"{password}"}}"#,
            self.port
        )
    }
}

impl Drop for SecurePostgres {
    fn drop(&mut self) {
        run_as_postgres(
            &self.bindir.join("pg_ctl"),
            &[
                "-D",
                self.dir.join("data").to_str().unwrap(),
                "-m",
                "immediate",
                "stop",
            ],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn postgres_bindir() -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server binaries are not installed (/usr/lib/postgresql): install the postgresql package");
    let mut dirs: Vec<PathBuf> = versions.map(|d| d.unwrap().path().join("bin")).collect();
    dirs.sort();
    dirs.pop()
        .expect("no PostgreSQL version under /usr/lib/postgresql")
}

fn is_root() -> bool {
    let output = Command::new("id")
        .arg("-u")
        .output()
        .expect("running id -u");
    String::from_utf8_lossy(&output.stdout).trim() == "0"
}

/// PostgreSQL refuses to run as root: when the tests are root, the server runs as `postgres`.
fn run_as_postgres(program: &Path, args: &[&str]) {
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    let output = command
        .args(args)
        .output()
        .expect("starting a PostgreSQL tool");
    assert!(
        output.status.success(),
        "{} {args:?} failed: {}",
        program.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn as_server_owner(args: &[&str]) {
    if is_root() {
        let status = Command::new(args[0]).args(&args[1..]).status().unwrap();
        assert!(status.success(), "{args:?}");
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
