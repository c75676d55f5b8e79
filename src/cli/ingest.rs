//! `s3flow ingest URL s3://bucket/key`: the ingest engine on one machine, with a progress bar.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use ipnet::IpNet;
use s3flow::address::AddressPolicy;
use s3flow::ingest::{
    self, IngestRequest, MemoryBudget, NoLog, PartSize, Progress, SourceConfig, ThroughputFloor,
};
use s3flow::s3::S3Url;
use s3flow::shutdown::{self, Stop};
use s3flow::size::parse_size;

#[derive(Args)]
pub(crate) struct IngestArgs {
    /// The http:// or https:// URL to copy.
    url: String,
    /// The destination, s3://bucket/key.
    destination: S3Url,
    /// Endpoint of an S3-compatible store (path-style addressing is then used).
    #[arg(long)]
    endpoint: Option<String>,
    /// Region to sign for (default: the AWS chain's, else us-east-1).
    #[arg(long)]
    region: Option<String>,
    /// Part size: auto, or bytes with an optional Ki/Mi/Gi suffix (5Mi to 5Gi).
    #[arg(long, default_value = "auto")]
    part_size: String,
    /// Parts in flight at once; memory stays within part size x (concurrency + 2).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    concurrency: u16,
    /// CIDR a source may resolve to although it is loopback or link-local (cloud metadata
    /// addresses stay refused).
    #[arg(long = "allow-source-cidr", alias = "allow-cidr", value_name = "CIDR")]
    allow_source_cidrs: Vec<IpNet>,
    /// HTTP header sent to the source, as "Name: value" (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// PEM file of extra CAs to trust for an https source.
    #[arg(long)]
    ca_bundle: Option<PathBuf>,
    /// Fail unless the source has exactly this many bytes.
    #[arg(long)]
    expected_size: Option<u64>,
    /// Fail, leaving no object, unless the body has this SHA-256 (lowercase hex).
    #[arg(long)]
    expected_sha256: Option<String>,
    /// Replace an existing object instead of failing.
    #[arg(long)]
    overwrite: bool,
    /// Content-Type of the object (default: the source's).
    #[arg(long)]
    content_type: Option<String>,
    /// Storage class of the object.
    #[arg(long)]
    storage_class: Option<String>,
    /// Seconds without a byte from the source before a read counts as stalled; also the window
    /// over which --min-source-bytes-per-second is judged.
    #[arg(long, default_value_t = 60)]
    stall_timeout: u64,
    /// A source sending fewer bytes per second than this while it is waited on fails
    /// (SourceStalled; 0: no floor).
    #[arg(long, default_value_t = 1024)]
    min_source_bytes_per_second: u64,
}

/// The engine's request the arguments ask for.
fn request(args: IngestArgs) -> anyhow::Result<IngestRequest> {
    let S3Url { bucket, key } = args.destination;
    let part_size = match args.part_size.as_str() {
        "auto" => PartSize::Auto,
        text => PartSize::Fixed(parse_size(text)?),
    };
    let headers = args
        .headers
        .iter()
        .map(|h| {
            h.split_once(':')
                .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
                .with_context(|| format!("--header {h:?} is not \"Name: value\""))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ca_bundle = match &args.ca_bundle {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
        }
        None => None,
    };
    let request = IngestRequest {
        source: SourceConfig {
            url: args.url.clone(),
            headers,
            ca_bundle,
            policy: Arc::new(AddressPolicy {
                allowed: args.allow_source_cidrs.clone(),
                ..Default::default()
            }),
            stall_timeout: Duration::from_secs(args.stall_timeout.max(1)),
            floor: ThroughputFloor {
                min_bytes_per_second: args.min_source_bytes_per_second,
                window: Duration::from_secs(args.stall_timeout.max(1)),
            },
        },
        expected_size: args.expected_size,
        expected_sha256: args.expected_sha256.map(|s| s.to_ascii_lowercase()),
        bucket,
        key,
        content_type: args.content_type,
        storage_class: args.storage_class,
        overwrite: args.overwrite,
        part_size,
        concurrency: args.concurrency as usize,
    };
    Ok(request)
}

pub(crate) async fn run(args: IngestArgs) -> anyhow::Result<serde_json::Value> {
    let (endpoint, region) = (args.endpoint.clone(), args.region.clone());
    let request = request(args)?;
    let s3 = super::s3_client(endpoint, region).await?;
    let (progress, mut updates) = tokio::sync::watch::channel(Progress::default());
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {bytes}/{total_bytes} {wide_bar} {binary_bytes_per_sec} ETA {eta} {msg}",
        )
        .expect("valid template"),
    );
    // One ingest on the user's own machine: its memory is its own, bounded by its settings.
    let mut memory = MemoryBudget::unlimited().reserve(0).await?;
    let mut log = NoLog;
    let mut stop = Stop::on(shutdown::on_signal()?);
    // In a scope of its own: on a stop, the engine and its part uploads are dropped before the
    // upload is aborted.
    let outcome = {
        let engine = ingest::ingest(&s3, &request, &progress, None, &mut memory, &mut log);
        tokio::pin!(engine);
        loop {
            tokio::select! {
                outcome = &mut engine => break Some(outcome),
                () = stop.requested() => break None,
                Ok(()) = updates.changed() => {
                    let p = updates.borrow_and_update().clone();
                    if let Some(total) = p.total_bytes {
                        bar.set_length(total);
                    }
                    bar.set_position(p.bytes_committed);
                    bar.set_message(format!("{} parts", p.parts_committed));
                }
            }
        }
    };
    bar.finish_and_clear();
    let Some(outcome) = outcome else {
        // Stopped (Ctrl-C, SIGTERM): the upload goes too.
        let upload_id = progress.borrow().upload_id.clone();
        if let Some(upload_id) = upload_id {
            ingest::abort_upload(&s3, &request.bucket, &request.key, &upload_id)
                .await
                .with_context(|| format!("stopped; aborting upload {upload_id}"))?;
        }
        anyhow::bail!("stopped before the copy ended; its upload was aborted");
    };
    let outcome = outcome.map_err(|e| anyhow::anyhow!("{} ({})", e, e.reason()))?;
    if let Some(warning) = &outcome.tag_error {
        eprintln!("warning: {warning}");
    }
    Ok(serde_json::json!({
        "bucket": request.bucket,
        "key": request.key,
        "size": outcome.size,
        "sha256": outcome.sha256,
        "etag": outcome.etag,
        "parts": outcome.parts,
        "sourceResumes": outcome.source_resumes,
    }))
}
