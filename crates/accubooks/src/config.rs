//! Command line and environment: every setting of API.md's configuration table.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// AccuBooks: a multi-tenant accounting API whose financial writes happen exactly once.
#[derive(Debug, Parser)]
#[command(name = "accubooks", version, about, propagate_version = true)]
pub struct Cli {
    /// Print JSON instead of tables (operator commands).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server.
    Serve(Box<ServeArgs>),
    /// Apply pending database migrations and exit (`--status`: only list them).
    Migrate(MigrateArgs),
    /// The idempotency key table: health numbers, one record, the prune.
    Keys {
        /// The store.
        #[command(flatten)]
        db: DbArgs,
        /// What to do.
        #[command(subcommand)]
        command: crate::cli::keys::KeysCommand,
    },
    /// The audit log: compliance checks, failures, replays.
    Audit {
        /// The store.
        #[command(flatten)]
        db: DbArgs,
        /// What to do.
        #[command(subcommand)]
        command: crate::cli::audit::AuditCommand,
    },
    /// Reports from the audit log (the weekly KPI report).
    Report {
        /// The store.
        #[command(flatten)]
        db: DbArgs,
        /// Which report.
        #[command(subcommand)]
        command: crate::cli::report::ReportCommand,
    },
    /// Companies, through the running server's admin API.
    Companies {
        /// The server.
        #[command(flatten)]
        server: crate::cli::tenants::ServerArgs,
        /// What to do.
        #[command(subcommand)]
        command: crate::cli::tenants::CompaniesCommand,
    },
    /// API tokens, through the running server's admin API.
    Tokens {
        /// The server.
        #[command(flatten)]
        server: crate::cli::tenants::ServerArgs,
        /// What to do.
        #[command(subcommand)]
        command: crate::cli::tenants::TokensCommand,
    },
    /// Load test a running server and check that no key executed twice.
    Load(crate::cli::load::LoadArgs),
    /// Post-deploy check of a running server: every operation and its replay, health,
    /// metrics and the OpenAPI document.
    Smoke(crate::cli::tenants::ServerArgs),
    /// The API's contract.
    Contract {
        /// What to do.
        #[command(subcommand)]
        command: ContractCommand,
    },
}

/// `accubooks migrate` options.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// The store.
    #[command(flatten)]
    pub db: DbArgs,
    /// List applied and pending migrations; apply nothing (exit 1 when some are pending).
    #[arg(long)]
    pub status: bool,
}

/// `accubooks contract …`.
#[derive(Debug, Subcommand)]
pub enum ContractCommand {
    /// Check that the registry, the OpenAPI document and CONTRACT.md agree on every
    /// operation (name, type, method, route).
    Verify {
        /// The contract document to check.
        #[arg(long, default_value = "docs/CONTRACT.md")]
        contract: std::path::PathBuf,
    },
    /// Print the OpenAPI document exactly as the server serves it at `GET /openapi.json`
    /// (for validators and client generators; no server or store needed).
    Openapi,
}

/// Where the database is.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// Database URL: `sqlite://FILE` (created if missing) or `postgres://…`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://accubooks.db")]
    pub database_url: String,
    /// The PostgreSQL URL is a transaction-pooling proxy (PgBouncer with
    /// `pool_mode = transaction`): every statement runs inside a transaction, nothing is
    /// prepared by name, timeouts are set per transaction, and migrations are checked
    /// but not applied (apply them with `accubooks migrate` against PostgreSQL itself).
    #[arg(long, env = "ACCUBOOKS_TRANSACTION_POOLER")]
    pub transaction_pooler: bool,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for machines).
    Json,
    /// Human-readable lines.
    Pretty,
}

/// Settings of `accubooks serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ACCUBOOKS_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    #[command(flatten)]
    /// The database.
    pub db: DbArgs,

    /// Apply pending migrations at start (the default); see --no-migrate.
    #[arg(
        long = "migrate",
        env = "ACCUBOOKS_MIGRATE",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
        overrides_with = "no_migrate"
    )]
    pub migrate: bool,

    /// Do not migrate at start; an outdated schema then stops the start.
    #[arg(long = "no-migrate", overrides_with = "migrate")]
    pub no_migrate: bool,

    /// Operator token for /admin/ (overrides the stored one; only its hash is kept); at
    /// least 32 visible ASCII characters, 10 of them distinct.
    #[arg(long, env = "ACCUBOOKS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// How long completed idempotency records count (must exceed the lease).
    #[arg(long, env = "ACCUBOOKS_KEY_TTL", default_value = "24h", value_parser = parse_duration)]
    pub key_ttl: Duration,

    /// How long a write's session may sit idle in its transaction, or run one statement,
    /// before PostgreSQL ends it (and the key can execute elsewhere).
    #[arg(long, env = "ACCUBOOKS_LEASE", default_value = "30s", value_parser = parse_duration)]
    pub lease: Duration,

    /// Longest `Prefer: wait` honoured.
    #[arg(long, env = "ACCUBOOKS_MAX_WAIT", default_value = "30s", value_parser = parse_duration)]
    pub max_wait: Duration,

    /// Database pool size (default: 32 on PostgreSQL, 8 on SQLite).
    #[arg(long, env = "ACCUBOOKS_POOL_SIZE", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub pool_size: Option<u32>,

    /// Log format.
    #[arg(long, env = "ACCUBOOKS_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,

    /// When the prune job runs: a 5-field cron expression, UTC.
    #[arg(long, env = "ACCUBOOKS_PRUNE_SCHEDULE", default_value = "30 3 * * *")]
    pub prune_schedule: String,

    /// Attempts of a workflow action before its instance is `failed`.
    #[arg(long, env = "ACCUBOOKS_WEBHOOK_MAX_ATTEMPTS", default_value_t = 12,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub webhook_max_attempts: u32,

    /// Delay before the first retry of a failed webhook; doubles per attempt (with
    /// jitter, 50–100 % of the step), up to one hour.
    #[arg(long, env = "ACCUBOOKS_WEBHOOK_BACKOFF", default_value = "10s", value_parser = parse_duration)]
    pub webhook_backoff: Duration,

    /// Longest one webhook attempt may take (connect, send, answer).
    #[arg(long, env = "ACCUBOOKS_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub webhook_timeout: Duration,

    /// How long a node holds a claimed workflow instance; a dead node's instances are
    /// claimed again after it. Must exceed --webhook-timeout.
    #[arg(long, env = "ACCUBOOKS_WEBHOOK_LEASE", default_value = "60s", value_parser = parse_duration)]
    pub webhook_lease: Duration,

    /// Allow webhook targets on loopback, private and link-local addresses.
    #[arg(long, env = "ACCUBOOKS_WEBHOOK_ALLOW_PRIVATE", default_value_t = false,
          value_parser = clap::builder::BoolishValueParser::new(), hide = true)]
    pub webhook_allow_private: bool,

    #[command(flatten)]
    /// Limits on clients: timeouts, connections, requests in flight, audit memory.
    pub limits: LimitArgs,
}

/// Limits that keep hostile and slow clients from holding the server's resources.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Longest time a client may take to send a request's headers (also how long an
    /// idle keep-alive connection stays open).
    #[arg(long, env = "ACCUBOOKS_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// Longest time a client may take to send a request's body.
    #[arg(long, env = "ACCUBOOKS_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub body_timeout: Duration,

    /// Most open client connections; further ones wait in the listen backlog.
    #[arg(long, env = "ACCUBOOKS_MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// Most requests in flight; past it requests are refused with 503 and Retry-After
    /// (health and metrics are never refused).
    #[arg(long, env = "ACCUBOOKS_MAX_IN_FLIGHT", default_value_t = 2048,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_in_flight: u32,

    /// Memory bound of the audit queue (replay and failure rows waiting to be written),
    /// in bytes; rows past it are dropped and counted.
    #[arg(long, env = "ACCUBOOKS_AUDIT_QUEUE_BYTES", default_value_t = 64 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(4096..))]
    pub audit_queue_bytes: u64,
}

impl Default for LimitArgs {
    fn default() -> Self {
        LimitArgs {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 4096,
            max_in_flight: 2048,
            audit_queue_bytes: 64 * 1024 * 1024,
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (use forms like 30s, 5m, 24h)"))
}

impl ServeArgs {
    /// Whether to migrate at start.
    pub fn should_migrate(&self) -> bool {
        self.migrate && !self.no_migrate && !self.db.transaction_pooler
    }

    /// Checks the settings together; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease < Duration::from_millis(100) {
            return Err("--lease must be at least 100ms".into());
        }
        if self.key_ttl <= self.lease {
            return Err(format!(
                "--key-ttl ({}) must exceed --lease ({}): a record must outlive its claim",
                humantime::format_duration(self.key_ttl),
                humantime::format_duration(self.lease)
            ));
        }
        if self.webhook_lease <= self.webhook_timeout {
            return Err(format!(
                "--webhook-lease ({}) must exceed --webhook-timeout ({}): an attempt must end before its claim does",
                humantime::format_duration(self.webhook_lease),
                humantime::format_duration(self.webhook_timeout)
            ));
        }
        if self.webhook_timeout < Duration::from_millis(100) {
            return Err("--webhook-timeout must be at least 100ms".into());
        }
        if let Some(why) = self
            .admin_token
            .as_deref()
            .and_then(crate::auth::operator_token_weakness)
        {
            return Err(format!(
                "--admin-token (ACCUBOOKS_ADMIN_TOKEN) is too weak: {why}. Use at least 32 random visible ASCII characters (for example the output of `openssl rand -base64 32`), or leave it unset to have a strong one generated and stored"
            ));
        }
        if let Err(e) = crate::jobs::parse_schedule(&self.prune_schedule) {
            return Err(format!(
                "--prune-schedule {:?} is not a 5-field cron expression: {e}",
                self.prune_schedule
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn limit_defaults_match_the_command_line_defaults() {
        let cli = Cli::parse_from(["accubooks", "serve"]);
        let Command::Serve(args) = cli.command else {
            panic!()
        };
        let d = LimitArgs::default();
        assert_eq!(
            (
                args.limits.header_timeout,
                args.limits.body_timeout,
                args.limits.max_connections,
                args.limits.max_in_flight,
                args.limits.audit_queue_bytes
            ),
            (
                d.header_timeout,
                d.body_timeout,
                d.max_connections,
                d.max_in_flight,
                d.audit_queue_bytes
            )
        );
    }

    #[test]
    fn no_migrate_turns_migration_off_and_ttl_must_exceed_lease() {
        let cli = Cli::parse_from([
            "accubooks",
            "serve",
            "--no-migrate",
            "--key-ttl",
            "10s",
            "--lease",
            "30s",
        ]);
        let Command::Serve(args) = cli.command else {
            panic!()
        };
        assert!(!args.should_migrate());
        assert!(args.validate().unwrap_err().contains("--key-ttl"));
    }
}
