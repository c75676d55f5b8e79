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
    Controller(ControllerArgs),
    /// Process one chunk of an S3ParallelScan (run inside chunk Jobs).
    Worker(Box<cli::worker::WorkerArgs>),
    /// Stream a URL into S3 on this machine.
    Ingest(Box<cli::ingest::IngestArgs>),
    /// Scan an S3 object in parallel on this machine.
    Scan(Box<cli::scan::ScanArgs>),
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Print the version as JSON.
    Version,
}

#[derive(clap::Args)]
struct ControllerArgs {
    /// CIDR an S3Ingest source may resolve to although it is loopback, link-local or a metadata
    /// address (repeatable).
    #[arg(long = "allow-source-cidr", value_name = "CIDR")]
    allow_source_cidrs: Vec<ipnet::IpNet>,
    /// Ingests streaming at once in this operator.
    #[arg(long, default_value_t = 4)]
    max_concurrent_ingests: usize,
    /// Seconds without a byte from a source before its read counts as stalled.
    #[arg(long, default_value_t = 60)]
    stall_timeout: u64,
    /// Seconds between progress updates in an ingest's status.
    #[arg(long, default_value_t = 2)]
    status_interval: u64,
    /// Image of chunk-worker Jobs when a scan names none (the operator's own).
    #[arg(long, env = "S3FLOW_WORKER_IMAGE", default_value = concat!("ghcr.io/s3flow/s3flow:", env!("CARGO_PKG_VERSION")))]
    worker_image: String,
}

/// Part buffers are megabytes each and short-lived. glibc raises its mmap threshold after such
/// frees, keeping freed buffers in per-thread heaps where they count against the memory bound:
/// a fixed threshold makes every buffer a mapping that goes back to the OS when freed.
fn pin_malloc_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn main() {
    pin_malloc_mmap_threshold();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    if let Err(error) = runtime.block_on(run(Cli::parse())) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
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
        Command::Controller(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info,kube=warn".into()),
                )
                .init();
            let client = kube::Client::try_default()
                .await
                .context("connecting to Kubernetes")?;
            let settings = s3flow::controller::Settings {
                source_policy: std::sync::Arc::new(s3flow::ingest::AddressPolicy::allowing(
                    args.allow_source_cidrs,
                )),
                max_concurrent_ingests: args.max_concurrent_ingests,
                stall_timeout: std::time::Duration::from_secs(args.stall_timeout),
                status_interval: std::time::Duration::from_secs(args.status_interval.max(1)),
                worker_image: args.worker_image,
            };
            s3flow::controller::run(client, settings).await;
            return Ok(());
        }
        Command::Scan(args) => {
            let (summary, json) = cli::scan::run(*args).await?;
            if !json {
                return Ok(());
            }
            summary
        }
        Command::Worker(args) => match cli::worker::run(*args).await {
            Ok(report) => report,
            Err(failure) => {
                // The Job's pod failure policy reads the exit code: bad data is not retried.
                if let Some(path) = &cli.termination_message_path {
                    let _ = std::fs::write(path, failure.message());
                }
                eprintln!("error: {}", failure.error);
                std::process::exit(failure.exit_code());
            }
        },
    };
    let line = result.to_string();
    println!("{line}");
    if let Some(path) = cli.termination_message_path {
        std::fs::write(&path, &line)
            .with_context(|| format!("writing the termination message to {}", path.display()))?;
    }
    Ok(())
}
