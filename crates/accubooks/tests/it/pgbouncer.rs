//! Scale-out through a transaction pooler: the multi-node tests of `processes` run with
//! every node connected through a real PgBouncer (Debian's `pgbouncer`) in
//! `pool_mode = transaction`, started here with its own configuration. Under that mode
//! any server connection may serve any transaction, so nothing session-scoped may
//! survive one: no session advisory lock, no session `SET`, no statement prepared by
//! name. The pool is kept small so that transactions really do move between server
//! connections.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{postgres_url, Backend, TestDb};
use crate::processes::{frozen_case, killed_case, three_nodes_case, Via};

/// A PgBouncer process with a configuration of its own, in a directory of its own.
struct Bouncer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Bouncer {
    /// Whether the `pgbouncer` binary is installed (`.ci/run` installs it).
    fn available() -> bool {
        Command::new("pgbouncer")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts PgBouncer in front of the PostgreSQL of `admin_url`, transaction pooling,
    /// at most `server_pool` server connections per database.
    async fn start(admin_url: &str, server_pool: u32) -> Bouncer {
        let target = url::Url::parse(admin_url).expect("DATABASE_URL_TEST is a URL");
        let host = target.host_str().unwrap_or("127.0.0.1").to_owned();
        let pg_port = target.port().unwrap_or(5432);
        let user = if target.username().is_empty() {
            "postgres".to_owned()
        } else {
            target.username().to_owned()
        };
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let dir = tempfile::tempdir().expect("tempdir");
        // PgBouncer refuses to run as root; it then switches to `nobody`, who must read
        // the configuration.
        let readable = |p: &std::path::Path| {
            use std::os::unix::fs::PermissionsExt;
            let mode = if p.is_dir() { 0o755 } else { 0o644 };
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        };
        let users = dir.path().join("userlist.txt");
        std::fs::write(&users, format!("\"{user}\" \"\"\n")).expect("userlist");
        let ini = dir.path().join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n\
                 * = host={host} port={pg_port}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {users}\n\
                 pool_mode = transaction\n\
                 default_pool_size = {server_pool}\n\
                 max_client_conn = 1000\n\
                 ignore_startup_parameters = extra_float_digits,options\n\
                 server_reset_query =\n",
                users = users.display()
            ),
        )
        .expect("pgbouncer.ini");
        for p in [dir.path(), users.as_path(), ini.as_path()] {
            readable(p);
        }
        let mut command = Command::new("pgbouncer");
        if is_root() {
            command.args(["-u", "nobody"]);
        }
        let child = command
            .arg(&ini)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer");
        let bouncer = Bouncer {
            child,
            port,
            _dir: dir,
        };
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "pgbouncer did not start listening"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bouncer
    }

    /// The URL of `db`'s database through this PgBouncer.
    fn via(&self, db: &TestDb) -> Via {
        let mut url = url::Url::parse(&db.url).expect("test database URL");
        url.set_host(Some("127.0.0.1")).expect("host");
        url.set_port(Some(self.port)).expect("port");
        Via {
            url: url.to_string(),
            pooled: true,
        }
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// A fresh PostgreSQL database with the schema applied directly (migrations hold a
/// session lock, so they never go through the pooler).
async fn migrated_db() -> TestDb {
    let db = TestDb::new(Backend::Postgres).await;
    let out = Command::new(env!("CARGO_BIN_EXE_accubooks"))
        .args(["migrate", "--database-url", &db.url])
        .output()
        .expect("accubooks migrate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(pg_tests), ignore = "PostgreSQL: set DATABASE_URL_TEST to run")]
async fn the_multi_node_tests_hold_through_pgbouncer_in_transaction_mode() {
    let Some(admin) = postgres_url() else {
        eprintln!("skipped: DATABASE_URL_TEST is not set");
        return;
    };
    if !Bouncer::available() {
        eprintln!("skipped: pgbouncer is not installed (apt-get install pgbouncer)");
        return;
    }
    // Three nodes of five connections each share four server connections.
    let bouncer = Bouncer::start(&admin, 4).await;

    let db = migrated_db().await;
    three_nodes_case(&db, &bouncer.via(&db)).await;

    let db = migrated_db().await;
    killed_case(&db, &bouncer.via(&db)).await;

    let db = migrated_db().await;
    frozen_case(&db, &bouncer.via(&db)).await;

    let db = migrated_db().await;
    claim_lease_case(&bouncer.via(&db)).await;
}

/// Through the pooler every transaction sets the session's settings again; the claim's
/// lease must still be what the write's transaction runs under, and must not outlive it
/// on the server connection.
async fn claim_lease_case(via: &Via) {
    use idem::store::{self, Claim, Lease};
    let mut opts = idem::db::ConnectOptions::default();
    opts.transaction_pooler = true;
    opts.pool_size = Some(2);
    opts.statement_timeout = Some(Duration::from_secs(30));
    opts.idle_in_transaction_timeout = Some(Duration::from_secs(60));
    let db = idem::Db::connect(&via.url, &opts).await.expect("connect");
    let scope = idem::Scope::new(
        "company",
        "tenant-p",
        "createCustomer",
        idem::IdempotencyKey::parse(b"pooled").expect("key"),
    );
    let lease = Lease {
        lease: Duration::from_millis(1234),
        lock_timeout: Duration::from_millis(567),
    };
    let mut tx = db.begin().await.expect("begin");
    let claim = store::claim(&mut tx, &scope, lease).await.expect("claim");
    assert!(matches!(claim, Claim::Claimed), "{claim:?}");
    let inside: (String, String, String) = idem::on_tx!(&mut tx, |c| sqlx::query_as(
        "select current_setting('statement_timeout'), \
         current_setting('idle_in_transaction_session_timeout'), \
         current_setting('lock_timeout')"
    )
    .fetch_one(c)
    .await)
    .expect("settings");
    tx.rollback().await.expect("rollback");
    assert_eq!(
        inside,
        ("1234ms".to_owned(), "1234ms".to_owned(), "567ms".to_owned()),
        "the claim's lease, not the session's settings"
    );
    // The next transaction on the pool runs under the session's settings again.
    let mut tx = db.begin().await.expect("begin");
    let after: String = idem::on_tx!(&mut tx, |c| sqlx::query_scalar(
        "select current_setting('statement_timeout')"
    )
    .fetch_one(c)
    .await)
    .expect("settings");
    tx.rollback().await.expect("rollback");
    assert_eq!(after, "30s");
    db.close().await;
}
