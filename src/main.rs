mod cli;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Streams and processes very large S3 objects with bounded memory, on Kubernetes or on one machine.
#[derive(Parser)]
#[command(name = "s3flow", version = s3flow::VERSION)]
struct Cli {
    /// Also write the command's one-line JSON result to this file, for a pod's termination message.
    #[arg(long, global = true, env = "S3FLOW_TERMINATION_MESSAGE_PATH")]
    termination_message_path: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator: reconcile S3Ingest and S3ParallelScan resources.
    Controller,
    /// Process one chunk of an S3ParallelScan (run inside chunk Jobs).
    Worker,
    /// Stream a URL into S3 on this machine.
    Ingest(Box<cli::ingest::IngestArgs>),
    /// Scan an S3 object in parallel on this machine.
    Scan,
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Print the version as JSON.
    Version,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd => {
            print!(
                "{}",
                s3flow::api::crds_yaml().context("rendering the CRDs")?
            );
            return Ok(());
        }
        Command::Version => s3flow::version_json(),
        Command::Ingest(args) => cli::ingest::run(*args).await?,
        Command::Controller | Command::Worker | Command::Scan => {
            anyhow::bail!(
                "this subcommand is not yet available in s3flow {}",
                s3flow::VERSION
            )
        }
    };
    let line = result.to_string();
    println!("{line}");
    if let Some(path) = cli.termination_message_path {
        std::fs::write(&path, &line)
            .with_context(|| format!("writing the termination message to {}", path.display()))?;
    }
    Ok(())
}
