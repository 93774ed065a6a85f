use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    accubooks::cli::run(accubooks::config::Cli::parse()).await
}
