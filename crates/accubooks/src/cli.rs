//! The `accubooks` command line.

use anyhow::Context;
use tracing_subscriber::EnvFilter;

use crate::app::{self, Application};
use crate::config::{AuditCommand, Cli, Command, LogFormat};

/// Sets up logging (JSON lines, or pretty for people). `RUST_LOG` filters.
pub fn init_logging(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
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
            init_logging(args.log_format);
            let app = Application::build(*args).await?;
            tracing::info!(address = %app.local_addr(), "listening");
            app.run_until_stopped(shutdown_signal()).await
        }
        Command::Migrate(db) => {
            init_logging(LogFormat::Pretty);
            let pool = idem::Db::connect(&db.database_url, &idem::db::ConnectOptions::default())
                .await
                .with_context(|| {
                    format!("failed to connect to {}", app::redact(&db.database_url))
                })?;
            app::migrate(&pool).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Audit(AuditCommand::Archive(args)) => {
            init_logging(LogFormat::Pretty);
            let pool =
                idem::Db::connect(&args.db.database_url, &idem::db::ConnectOptions::default())
                    .await
                    .with_context(|| {
                        format!(
                            "failed to connect to {}",
                            app::redact(&args.db.database_url)
                        )
                    })?;
            let older_than =
                chrono::Duration::from_std(args.older_than).context("--older-than is too large")?;
            let cutoff = chrono::Utc::now() - older_than;
            let done = crate::archive::archive(&pool, cutoff, &args.out, None).await?;
            for m in &done {
                println!(
                    "{}: {} rows → {} (sha256 {})",
                    m.partition, m.rows, m.file, m.sha256
                );
            }
            println!("{} month(s) archived", done.len());
            Ok(())
        }
    }
}
