//! `s3flow scan s3://bucket/key --sql ...`: the scan engine on one machine, chunks as local tasks.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use s3flow::s3::S3Url;
use s3flow::scan::local::{Counters, ScanSummary, print_rows, scan};
use s3flow::scan::plan::{DetectedFormat, detect_format};
use s3flow::scan::sql::{Columns, compile};
use s3flow::scan::{InputFormat, Layout, Output, OutputFormat, PlanRequest, plan};
use s3flow::shutdown::{self, Stop};
use s3flow::size::parse_size;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FormatArg {
    /// Parquet when the object starts with PAR1, else by its name's extension, else CSV.
    Auto,
    Csv,
    Jsonl,
    Parquet,
}

#[derive(Args)]
pub(crate) struct ScanArgs {
    /// The object to scan, s3://bucket/key.
    object: S3Url,
    /// The query: SELECT * | columns | aggregates FROM S3Object s [WHERE ...] [LIMIT n].
    #[arg(long)]
    sql: String,
    /// Format of the object.
    #[arg(long, value_enum, default_value = "auto")]
    format: FormatArg,
    /// CSV: the object has no header row (columns are _1, _2, ...).
    #[arg(long)]
    no_header: bool,
    /// CSV field delimiter (one byte).
    #[arg(long, default_value = ",")]
    delimiter: char,
    /// CSV quote character (one byte).
    #[arg(long, default_value = "\"")]
    quote: char,
    /// Endpoint of an S3-compatible store (path-style addressing is then used).
    #[arg(long)]
    endpoint: Option<String>,
    /// Region to sign for (default: the AWS chain's, else us-east-1).
    #[arg(long)]
    region: Option<String>,
    /// Bytes per chunk, with an optional Ki/Mi/Gi suffix; any size gives the same answer.
    #[arg(long, default_value = "64Mi")]
    chunk_size: String,
    /// Chunks processed at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    parallelism: u16,
    /// Longest record read (at least 1Ki); a longer one fails the scan as BadData naming its
    /// offset, instead of growing memory.
    #[arg(long, default_value = "64Mi")]
    max_record_size: String,
    /// Write selected rows as part files (and a manifest) under s3://bucket/prefix.
    #[arg(long, value_parser = S3Url::prefix)]
    output: Option<S3Url>,
    /// Format of the output parts (default: the object's; CSV for Parquet).
    #[arg(long, value_enum)]
    output_format: Option<OutputArg>,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Seconds without a byte from S3 before a read counts as stalled; also the window over which
    /// --min-bytes-per-second is judged.
    #[arg(long, default_value_t = 60)]
    stall_timeout: u64,
    /// An object read slower than this many bytes per second of waiting fails as SourceStalled
    /// (0: no floor).
    #[arg(long, default_value_t = 1024)]
    min_bytes_per_second: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputArg {
    Csv,
    Jsonl,
    /// Parquet of the selected columns (Parquet objects only).
    Parquet,
}

fn byte(c: char, what: &str) -> anyhow::Result<u8> {
    u8::try_from(c)
        .ok()
        .filter(u8::is_ascii)
        .ok_or_else(|| anyhow::anyhow!("--{what} must be one ASCII character, not {c:?}"))
}

/// The planning request and row output the arguments ask for, checked before any request but
/// the one that detects an `auto` format (`detected`).
fn request(
    args: &ScanArgs,
    detected: DetectedFormat,
) -> anyhow::Result<(PlanRequest, Option<Output>)> {
    let format = match detected {
        DetectedFormat::Csv => InputFormat::Csv {
            delimiter: byte(args.delimiter, "delimiter")?,
            quote: byte(args.quote, "quote")?,
            header: !args.no_header,
        },
        DetectedFormat::JsonLines => InputFormat::JsonLines,
        DetectedFormat::Parquet => InputFormat::Parquet,
    };
    let output = args.output.clone().map(|prefix| Output {
        bucket: prefix.bucket,
        prefix: prefix.key,
        format: match args.output_format {
            Some(OutputArg::Csv) => OutputFormat::Csv,
            Some(OutputArg::Jsonl) => OutputFormat::JsonLines,
            Some(OutputArg::Parquet) => OutputFormat::Parquet,
            None => format.output_format(),
        },
        scope: String::new(),
    });
    let chunk_size = parse_size(&args.chunk_size)?;
    if chunk_size == 0 {
        anyhow::bail!("--chunk-size must be at least 1 byte");
    }
    let max_record_size = parse_size(&args.max_record_size)?;
    if max_record_size < 1024 {
        anyhow::bail!("--max-record-size must be at least 1Ki");
    }
    // Refuse what cannot parse before any request (columns are checked once the header is read).
    compile(&args.sql, &Columns::Named).map_err(|e| anyhow::anyhow!("{e} (InvalidSql)"))?;
    let request = PlanRequest {
        bucket: args.object.bucket.clone(),
        key: args.object.key.clone(),
        format,
        expected_headers: None,
        chunk_size,
        max_record_size,
    };
    Ok((request, output))
}

/// Runs the scan; returns the JSON summary and whether to print it as JSON.
pub(crate) async fn run(args: ScanArgs) -> anyhow::Result<(serde_json::Value, bool)> {
    // Everything but the format is checked before the first request.
    request(&args, DetectedFormat::Csv)?;
    s3flow::s3::set_read_floor(s3flow::floor::ThroughputFloor {
        min_bytes_per_second: args.min_bytes_per_second,
        window: Duration::from_secs(args.stall_timeout.max(1)),
    });
    let s3 = super::s3_client(args.endpoint.clone(), args.region.clone()).await?;
    let detected = match args.format {
        FormatArg::Auto => detect_format(&s3, &args.object.bucket, &args.object.key)
            .await
            .map_err(|e| anyhow::anyhow!("{e} ({})", e.reason()))?,
        FormatArg::Csv => DetectedFormat::Csv,
        FormatArg::Jsonl => DetectedFormat::JsonLines,
        FormatArg::Parquet => DetectedFormat::Parquet,
    };
    let (request, output) = request(&args, detected)?;
    let started = Instant::now();
    let layout = plan(&s3, &request)
        .await
        .map_err(|e| anyhow::anyhow!("{e} ({})", e.reason()))?;
    let query = layout
        .compile(&args.sql)
        .map_err(|e| anyhow::anyhow!("{e} ({})", e.reason()))?;
    let counters = Counters::default();
    let parallelism = (args.parallelism as usize, Stop::on(shutdown::on_signal()?));
    // Rows of a row query go to stdout unless they are kept in S3 or a summary is asked for.
    let prints_rows = !query.is_aggregate() && output.is_none() && !args.json;
    let summary = if prints_rows {
        // Buffered: rows come in buffers of many rows, not line by line.
        let mut stdout = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
        let engine = print_rows(
            &s3,
            &layout,
            (&query, &args.sql),
            parallelism,
            &counters,
            &mut stdout,
        );
        let printed = with_progress_bar(&layout, &counters, engine).await;
        use std::io::Write;
        stdout.flush()?;
        printed
    } else {
        let engine = scan(
            &s3,
            &layout,
            (&query, &args.sql),
            output,
            parallelism,
            &counters,
        );
        with_progress_bar(&layout, &counters, engine).await
    }
    .map_err(|e| anyhow::anyhow!("{e} ({})", e.reason()))?;
    let seconds = started.elapsed().as_secs_f64();
    let mut value = serde_json::to_value(&summary)?;
    value["object"] = layout.object.url().into();
    value["size"] = layout.object.size.into();
    value["seconds"] = ((seconds * 1000.0).round() / 1000.0).into();
    if !args.json {
        print_summary(&layout, &summary, seconds, !prints_rows);
    }
    Ok((value, args.json))
}

/// Runs `engine` under a progress bar of bytes and chunks.
async fn with_progress_bar<T>(
    layout: &Layout,
    counters: &Counters,
    engine: impl Future<Output = T>,
) -> T {
    let bar = ProgressBar::new(layout.object.size.saturating_sub(layout.data_start));
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {bytes}/{total_bytes} {wide_bar} {binary_bytes_per_sec} {msg}",
        )
        .expect("valid template"),
    );
    let total_chunks = layout.chunk_count();
    tokio::pin!(engine);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let done = loop {
        tokio::select! {
            done = &mut engine => break done,
            _ = tick.tick() => {
                bar.set_position(counters.bytes.load(Ordering::Relaxed));
                let chunks = counters.chunks.load(Ordering::Relaxed);
                bar.set_message(format!("{chunks}/{total_chunks} chunks"));
            }
        }
    };
    bar.finish_and_clear();
    done
}

/// The summary on stderr; the result on stdout as a table of name and value (`result_out`:
/// stdout holds no rows).
fn print_summary(layout: &Layout, summary: &ScanSummary, seconds: f64, result_out: bool) {
    let reruns = match summary.reruns {
        0 => String::new(),
        n => format!(" ({n} re-run)"),
    };
    eprintln!(
        "{}: {} records in {} chunks{reruns}, {} bytes in {seconds:.1} s",
        layout.object.url(),
        summary.records,
        summary.chunks,
        summary.bytes,
    );
    if let Some(groups) = &summary.row_groups {
        eprintln!(
            "row groups: {} of {} skipped by their statistics ({} bytes); {} bytes fetched",
            groups.skipped, groups.total, groups.skipped_bytes, groups.fetched_bytes
        );
    }
    if !result_out {
        eprintln!("{} rows", summary.rows);
        return;
    }
    for (name, value) in &summary.result {
        println!("{name}\t{value}");
    }
    if let Some(manifest) = &summary.manifest {
        println!("manifest\t{manifest}");
    }
}
