//! The `accubooks` command line.

use anyhow::Context;
use tracing_subscriber::EnvFilter;

use crate::app::{self, Application};
use crate::config::{Cli, Command, LogFormat};

/// Sets up logging (JSON lines, or pretty for people). `RUST_LOG` filters.
///
/// Lines are written to stdout by a writer thread, off the request path. Its queue is
/// lossless: when it is full, a logging thread waits instead of dropping the line. Keep
/// the returned guard until exit: dropping it flushes what is queued.
pub fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("accubooks-log")
        .finish(std::io::stdout());
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

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let _log = init_logging(args.log_format);
            let app = Application::build(*args).await?;
            tracing::info!(address = %app.local_addr(), "listening");
            app.run_until_stopped(shutdown_signal()).await
        }
        Command::Migrate(db) => {
            let _log = init_logging(LogFormat::Pretty);
            let pool = idem::Db::connect(&db.database_url, &idem::db::ConnectOptions::default())
                .await
                .with_context(|| {
                    format!("failed to connect to {}", app::redact(&db.database_url))
                })?;
            app::migrate(&pool).await?;
            println!("migrations applied");
            Ok(())
        }
    }
}
