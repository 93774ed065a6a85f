use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    accubooks::cli::run(accubooks::config::Cli::parse()).await
}
