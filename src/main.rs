// Items of the CLI modules are the binary's own: pub(crate) at most.
#![warn(unreachable_pub)]

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
    Controller(Box<ControllerArgs>),
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
    /// CIDR that sources, S3 endpoints and chunk workers may reach although it is loopback,
    /// link-local, unspecified or this pod's own address (repeatable; cloud metadata addresses
    /// stay refused whatever it says).
    #[arg(long = "allow-cidr", alias = "allow-source-cidr", value_name = "CIDR")]
    allow_cidrs: Vec<ipnet::IpNet>,
    /// CIDR no source, S3 endpoint or chunk worker may reach, whatever --allow-cidr says (for
    /// example private ranges or the Service CIDR; repeatable).
    #[arg(long = "deny-cidr", value_name = "CIDR")]
    deny_cidrs: Vec<ipnet::IpNet>,
    /// This pod's own address(es), refused unless --allow-cidr opens them.
    #[arg(
        long = "pod-ip",
        env = "POD_IP",
        value_delimiter = ',',
        value_name = "IP"
    )]
    pod_ips: Vec<std::net::IpAddr>,
    /// The node's address(es), refused unless --allow-cidr opens them: its kubelet and whatever
    /// else listens there would be reached with the operator's network position.
    #[arg(
        long = "node-ip",
        env = "HOST_IP",
        value_delimiter = ',',
        value_name = "IP"
    )]
    node_ips: Vec<std::net::IpAddr>,
    /// Namespace whose resources may use the operator's own AWS identity (the default credential
    /// chain) when they name no credentials Secret (repeatable, or comma-separated; none by
    /// default: every resource brings its own credentials).
    #[arg(
        long = "default-credentials-namespace",
        value_name = "NAMESPACE",
        env = "S3FLOW_DEFAULT_CREDENTIALS_NAMESPACES",
        value_delimiter = ','
    )]
    default_credentials_namespaces: Vec<String>,
    /// Whether and where resources may act as a ServiceAccount of their namespace
    /// (`serviceAccountName`), as JSON: the chart's `identity` values (`enabled`, `namespaces`,
    /// `rbac`, `sessionDurationSeconds`, `cache`, `aws`, `sts`). Unset: disabled.
    #[arg(long, env = "S3FLOW_IDENTITY", value_parser = identity_arg)]
    identity: Option<s3flow::controller::identity::IdentitySettings>,
    /// Ingests streaming at once in this operator.
    #[arg(long, default_value_t = 4)]
    max_concurrent_ingests: usize,
    /// Memory all ingests' part buffers share, such as 512Mi. Default: half of the container's
    /// memory limit (--memory-limit), else 1Gi.
    #[arg(long, env = "S3FLOW_INGEST_MEMORY_BUDGET", value_parser = size_arg)]
    ingest_memory_budget: Option<u64>,
    /// The container's memory limit, in bytes or with a suffix (the chart sets it from the
    /// downward API).
    #[arg(long, env = "S3FLOW_MEMORY_LIMIT", value_parser = size_arg)]
    memory_limit: Option<u64>,
    /// Seconds without a byte from a source or an S3 endpoint before its read counts as stalled;
    /// also the window over which --min-source-bytes-per-second is judged.
    #[arg(long, default_value_t = 60)]
    stall_timeout: u64,
    /// A source or an S3 endpoint sending fewer bytes per second than this while it is waited on
    /// fails as SourceStalled instead of holding a transfer slot or a reconcile (0: no floor).
    #[arg(long, default_value_t = 1024)]
    min_source_bytes_per_second: u64,
    /// Image pattern a scan's containers may use (`*` matches any run of characters; repeatable).
    /// None: any image. The operator's own worker image is always allowed.
    #[arg(long = "allowed-image", value_name = "PATTERN")]
    allowed_images: Vec<String>,
    /// Seconds between progress updates in an ingest's status.
    #[arg(long, default_value_t = 2)]
    status_interval: u64,
    /// Image of chunk-worker Jobs when a scan names none (the operator's own).
    #[arg(long, env = "S3FLOW_WORKER_IMAGE", default_value = concat!("ghcr.io/s3flow/s3flow:", env!("CARGO_PKG_VERSION")))]
    worker_image: String,
    /// Namespace to watch (repeatable, or comma-separated); all namespaces when none is given.
    #[arg(
        long = "namespace",
        value_name = "NAMESPACE",
        env = "S3FLOW_WATCH_NAMESPACES",
        value_delimiter = ','
    )]
    namespaces: Vec<String>,
    /// Reconciles of one kind at once.
    #[arg(long, default_value_t = 16)]
    reconcile_concurrency: u16,
    /// Failed reconciles of one resource in a row (backing off to 5 minutes between them,
    /// about 25 minutes for 12) before it ends as Failed (RetriesExhausted).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..))]
    reconcile_retries: u32,
    /// Objects a scan of many lists per reconcile: its listing cursor is kept in status between
    /// slices, so a restart resumes it, and the operator never holds more than one slice.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    listing_slice: u32,
    /// Elect a leader on a Lease, so that with several replicas exactly one reconciles.
    #[arg(long)]
    leader_elect: bool,
    /// Namespace of the leader Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_election_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "s3flow-controller")]
    leader_election_lease: String,
    /// Seconds a leader's Lease lasts without renewal before a standby takes over.
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, default_value = "0.0.0.0")]
    http_host: std::net::IpAddr,
    /// Port of the /metrics endpoint (0: any free port, logged).
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// Port of the /healthz and /readyz endpoints, apart from /metrics so that its clients never
    /// starve the kubelet's probes (0: any free port, logged).
    #[arg(long, default_value_t = 8081)]
    probe_port: u16,
    /// Log format: text, or json (one object per line, for log pipelines).
    #[arg(long, env = "S3FLOW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

/// The operator's own addresses: its pod's, its node's, and those of the Services of its own
/// namespace (its metrics Service among them). A tenant's source URL or S3 endpoint at one of
/// them would be fetched with the operator's network position.
async fn own_addresses(
    client: &kube::Client,
    pod: Vec<std::net::IpAddr>,
    node: Vec<std::net::IpAddr>,
    namespace: &str,
) -> Vec<std::net::IpAddr> {
    let mut own = pod;
    own.extend(node);
    let services: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(client.clone(), namespace);
    match services.list(&Default::default()).await {
        Ok(list) => own.extend(
            list.items
                .iter()
                .filter_map(|service| service.spec.as_ref())
                .flat_map(|spec| spec.cluster_ips.iter().flatten())
                .filter_map(|ip| ip.parse::<std::net::IpAddr>().ok()),
        ),
        Err(e) => tracing::warn!(
            error = %e,
            namespace,
            "listing the operator's own Services (their addresses stay reachable)"
        ),
    }
    own.sort();
    own.dedup();
    own
}

async fn run_controller(args: ControllerArgs) -> anyhow::Result<()> {
    init_logs(args.log_format);
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let bind = async |port| {
        let address = std::net::SocketAddr::new(args.http_host, port);
        tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("listening on {address}"))
    };
    let listeners = (bind(args.http_port).await?, bind(args.probe_port).await?);
    // The pod name plus this process: a restarted container is a new candidate, not the holder.
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    let identity = format!(
        "{}_{:x}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "s3flow".into()),
        started ^ u128::from(std::process::id()) << 64
    );
    let stall_timeout = std::time::Duration::from_secs(args.stall_timeout.max(1));
    let floor = s3flow::floor::ThroughputFloor {
        min_bytes_per_second: args.min_source_bytes_per_second,
        window: stall_timeout,
    };
    // S3 endpoints are held to the same floor as ingest sources: planning reads run in the
    // operator, for any endpoint a spec names.
    s3flow::s3::set_read_floor(floor);
    let budget = args
        .ingest_memory_budget
        .or(args.memory_limit.map(|limit| limit / 2))
        .unwrap_or(1 << 30);
    let settings = s3flow::controller::Settings {
        policy: std::sync::Arc::new(s3flow::address::AddressPolicy {
            allowed: args.allow_cidrs,
            denied: args.deny_cidrs,
            own: own_addresses(
                &client,
                args.pod_ips,
                args.node_ips,
                &args.leader_election_namespace,
            )
            .await,
        }),
        default_credentials_namespaces: args.default_credentials_namespaces,
        identity: s3flow::controller::identity::IdentitySettings {
            release_namespace: args.leader_election_namespace.clone(),
            ..args.identity.unwrap_or_default()
        },
        max_concurrent_ingests: args.max_concurrent_ingests,
        ingest_memory: s3flow::ingest::MemoryBudget::new(budget)
            .shared_by(args.max_concurrent_ingests),
        stall_timeout,
        source_floor: floor,
        allowed_images: args.allowed_images,
        status_interval: std::time::Duration::from_secs(args.status_interval.max(1)),
        worker_image: args.worker_image,
        scope: if args.namespaces.is_empty() {
            s3flow::controller::Scope::All
        } else {
            s3flow::controller::Scope::Namespaces(args.namespaces)
        },
        reconcile_concurrency: args.reconcile_concurrency,
        reconcile_retries: args.reconcile_retries,
        planning_deadline: s3flow::scan::plan::PLANNING_DEADLINE,
        listing_slice: args.listing_slice as usize,
        leader: args
            .leader_elect
            .then(|| s3flow::controller::LeaderSettings {
                namespace: args.leader_election_namespace,
                lease_name: args.leader_election_lease,
                identity,
                lease_duration: std::time::Duration::from_secs(args.lease_duration.max(2)),
            }),
    };
    s3flow::controller::run(client, settings, Some(listeners)).await?;
    Ok(())
}

fn identity_arg(text: &str) -> Result<s3flow::controller::identity::IdentitySettings, String> {
    serde_json::from_str(text).map_err(|e| format!("identity settings: {e}"))
}

fn size_arg(text: &str) -> Result<u64, s3flow::size::SizeError> {
    s3flow::size::parse_size(text)
}

/// Part buffers are megabytes each and short-lived. glibc raises its mmap threshold after such
/// frees, keeping freed buffers in per-thread heaps where they count against the memory bound:
/// a fixed threshold makes every buffer a mapping that goes back to the OS when freed. Smaller
/// buffers (network reads) stay in the heaps: a fixed threshold also fixes the trim threshold at
/// 128 KiB, and heaps trimmed that eagerly fault the same pages back in for every few reads (a
/// third of a CSV count's CPU time went to page faults).
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
    }
}

fn main() {
    tune_malloc();
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
        Command::Controller(args) => return run_controller(*args).await,
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
