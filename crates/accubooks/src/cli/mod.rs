//! The `accubooks` command line: the server, migrations, and the operator's commands
//! (one module per group, printing through [`output::Report`]).

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

use crate::app::{self, Application};
use crate::config::{Cli, Command, ContractCommand, DbArgs, LogFormat};

pub mod audit;
pub mod client;
pub mod contract;
pub mod keys;
pub mod load;
pub mod output;
pub mod report;
pub mod smoke;
pub mod tenants;

use output::{fail, Report};

/// The registered operation named `name`, as the registry spells it.
pub fn registered_operation(name: &str) -> Option<&'static str> {
    crate::ops::registry()
        .operations()
        .iter()
        .map(|d| d.name())
        .find(|n| *n == name)
}

/// "unknown operation X; valid: …".
pub fn unknown_operation(name: &str) -> String {
    let valid: Vec<&str> = crate::ops::registry()
        .operations()
        .iter()
        .map(|d| d.name())
        .collect();
    format!("unknown operation {name:?}; valid: {}", valid.join(", "))
}

/// Sets up logging (JSON lines, or pretty for people). `RUST_LOG` filters.
///
/// Lines are written to stdout by a writer thread, off the request path, in batches: it
/// flushes each time it has drained its queue. The queue is lossless: when it is full, a
/// logging thread waits instead of dropping the line. Keep the returned guard until exit:
/// dropping it flushes what is queued.
pub fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("accubooks-log")
        // Buffered: the thread writes what it drained in one call, not one per line
        // (stdout alone is line-buffered), and flushes whenever its queue is empty.
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stdout(),
        ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    guard
}

/// Waits for SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Runs a parsed command line; the exit code is 0 ok, 1 findings, 2 usage or connection.
pub async fn run(cli: Cli) -> ExitCode {
    let json = cli.json;
    match cli.command {
        Command::Serve(args) => {
            let _log = init_logging(args.log_format);
            let served = async {
                let app = Application::build(*args).await?;
                tracing::info!(address = %app.local_addr(), "listening");
                app.run_until_stopped(shutdown_signal()).await
            };
            match served.await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(format!("{e:#}")),
            }
        }
        Command::Migrate(args) => {
            let db = match connect(&args.db, !args.status).await {
                Ok(db) => db,
                Err(code) => return code,
            };
            if args.status {
                return migration_status(&db, json).await;
            }
            match app::migrate(&db).await {
                Ok(()) => {
                    println!("migrations applied");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("{e:#}")),
            }
        }
        Command::Keys { db, command } => match connect(&db, false).await {
            Ok(db) => keys::run(&db, command, json).await,
            Err(code) => code,
        },
        Command::Audit { db, command } => match connect(&db, false).await {
            Ok(db) => audit::run(&db, command, json).await,
            Err(code) => code,
        },
        Command::Report { db, command } => match connect(&db, false).await {
            Ok(db) => report::run(&db, command, json).await,
            Err(code) => code,
        },
        Command::Companies { server, command } => tenants::companies(&server, command, json).await,
        Command::Tokens { server, command } => tenants::tokens(&server, command, json).await,
        Command::Load(args) => load::run(args, json).await,
        Command::Smoke(server) => smoke::run(&server, json).await,
        Command::Contract {
            command: ContractCommand::Verify { contract: doc },
        } => contract::verify(&doc, json),
        Command::Contract {
            command: ContractCommand::Openapi,
        } => contract::print_openapi(),
    }
}

/// Connects to the store of an operator command; one line and exit 2 when it cannot.
/// Only `migrate` creates a missing SQLite file.
async fn connect(args: &DbArgs, create: bool) -> Result<idem::Db, ExitCode> {
    let mut opts = idem::db::ConnectOptions::default();
    opts.pool_size = Some(2);
    opts.create_if_missing = create;
    opts.transaction_pooler = args.transaction_pooler;
    idem::Db::connect(&args.database_url, &opts)
        .await
        .map_err(|e| {
            fail(format!(
                "cannot connect to {}: {e}",
                app::redact(&args.database_url)
            ))
        })
}

async fn migration_status(db: &idem::Db, json: bool) -> ExitCode {
    let listed = match app::migration_status(db).await {
        Ok(l) => l,
        Err(e) => return fail(format!("{e:#}")),
    };
    let mut r = Report::new("Migrations", &["version", "description", "state"]);
    for m in listed {
        let row = vec![
            serde_json::json!(m.version),
            serde_json::json!(m.description),
            serde_json::json!(if m.applied { "applied" } else { "pending" }),
        ];
        if m.applied {
            r.row(row);
        } else {
            r.finding(row);
        }
    }
    r.print(json)
}
